package dataset

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// maxLine is the longest text line the line-based formats keep. A longer line
// is reported and skipped without being held in memory.
const maxLine = 1 << 20

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// lineScanner reads lines of at most max bytes. Unlike bufio.Scanner it
// survives an over-long line: it reports it (TooLong) and goes on with the
// next one. A UTF-8 BOM at the start and the CR of CRLF are dropped.
type lineScanner struct {
	br      *bufio.Reader
	max     int
	buf     []byte
	line    int
	tooLong bool
	err     error
}

func newLineScanner(r io.Reader, max int) *lineScanner {
	return &lineScanner{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// Scan advances to the next line and reports whether there is one.
func (s *lineScanner) Scan() bool {
	if s.err != nil {
		return false
	}
	s.buf, s.tooLong = s.buf[:0], false
	read := false
	for {
		chunk, err := s.br.ReadSlice('\n')
		read = read || len(chunk) > 0
		if !s.tooLong {
			if len(s.buf)+len(chunk) > s.max+2 { // +2: room for "\r\n"
				s.tooLong, s.buf = true, s.buf[:0]
			} else {
				s.buf = append(s.buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			s.err = err
			if !read {
				return false
			}
		}
		break
	}
	s.line++
	if s.line == 1 {
		s.buf = bytes.TrimPrefix(s.buf, utf8BOM)
	}
	s.buf = bytes.TrimSuffix(s.buf, []byte("\n"))
	s.buf = bytes.TrimSuffix(s.buf, []byte("\r"))
	return true
}

// Bytes is the current line, valid until the next Scan; empty when TooLong.
func (s *lineScanner) Bytes() []byte { return s.buf }

// Line is the 1-based number of the current line.
func (s *lineScanner) Line() int { return s.line }

// TooLong reports that the current line exceeded the limit and was dropped.
func (s *lineScanner) TooLong() bool { return s.tooLong }

// Err is the read error that ended scanning, nil at EOF.
func (s *lineScanner) Err() error {
	if errors.Is(s.err, io.EOF) {
		return nil
	}
	return s.err
}

// lineTracker turns byte offsets of a stream into line numbers without
// keeping the stream: it remembers only the newlines read but not yet passed.
// Offsets given to lineAt must not decrease.
type lineTracker struct {
	r    io.Reader
	read int64
	nl   []int64
	line int // newlines before the last offset asked for
}

func (t *lineTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	for i := 0; i < n; {
		j := bytes.IndexByte(p[i:n], '\n')
		if j < 0 {
			break
		}
		t.nl = append(t.nl, t.read+int64(i+j))
		i += j + 1
	}
	t.read += int64(n)
	return n, err
}

// lineAt returns the 1-based line of byte offset off.
func (t *lineTracker) lineAt(off int64) int {
	i := 0
	for i < len(t.nl) && t.nl[i] < off {
		i++
	}
	if i > 0 {
		t.line += i
		t.nl = t.nl[:copy(t.nl, t.nl[i:])]
	}
	return t.line + 1
}
