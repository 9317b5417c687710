package upload

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// source gives the bytes of a blob by offset. A file can give any offset;
// a stream only the current chunk and what follows it.
type source interface {
	// chunk returns bytes [off, off+n); the slice is valid until the next call.
	chunk(off, n int64) ([]byte, error)
	// rest returns a reader of the bytes from off to the end, for a
	// registry that takes only a monolithic PUT.
	rest(off int64) (io.Reader, error)
}

// errRewind: a stream cannot give bytes before its current chunk. Only a
// registry that lost acknowledged chunks asks for them.
var errRewind = errors.New("the registry lost bytes it had acknowledged, and a stream cannot be read again: push again")

// fileSource reads a file at any offset.
type fileSource struct {
	r    io.ReaderAt
	size int64
	buf  []byte
}

func (s *fileSource) chunk(off, n int64) ([]byte, error) {
	if int64(cap(s.buf)) < n {
		s.buf = make([]byte, n)
	}
	b := s.buf[:n]
	m, err := s.r.ReadAt(b, off)
	if int64(m) == n {
		return b, nil
	}
	if err == io.EOF {
		err = fmt.Errorf("the file ended at %d bytes, before the %d it had when hashed: %w", off+int64(m), s.size, io.ErrUnexpectedEOF)
	}
	return nil, err
}

func (s *fileSource) rest(off int64) (io.Reader, error) {
	return io.NewSectionReader(s.r, off, s.size-off), nil
}

// streamSource reads a stream once, keeping the current chunk so that a cut
// PATCH can be sent again, and skipping by reading what the registry has
// already (a resume in another process).
type streamSource struct {
	r    io.Reader
	buf  []byte
	base int64 // the offset of buf[0]
}

func (s *streamSource) chunk(off, n int64) ([]byte, error) {
	end := s.base + int64(len(s.buf))
	switch {
	case off < s.base:
		return nil, errRewind
	case off >= end:
		if _, err := io.CopyN(io.Discard, s.r, off-end); err != nil {
			return nil, s.short(err)
		}
		s.buf, s.base = s.buf[:0], off
	default:
		kept := copy(s.buf, s.buf[off-s.base:])
		s.buf, s.base = s.buf[:kept], off
	}
	if int64(len(s.buf)) >= n {
		return s.buf[:n], nil
	}
	if int64(cap(s.buf)) < n {
		s.buf = append(make([]byte, 0, n), s.buf...)
	}
	have := len(s.buf)
	m, err := io.ReadFull(s.r, s.buf[have:n])
	s.buf = s.buf[:have+m]
	if err != nil {
		return nil, s.short(err)
	}
	return s.buf, nil
}

func (s *streamSource) short(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (s *streamSource) rest(off int64) (io.Reader, error) {
	end := s.base + int64(len(s.buf))
	if off < s.base {
		return nil, errRewind
	}
	if off >= end {
		if _, err := io.CopyN(io.Discard, s.r, off-end); err != nil {
			return nil, s.short(err)
		}
		s.buf, s.base = s.buf[:0], off
		return s.r, nil
	}
	return io.MultiReader(bytes.NewReader(append([]byte(nil), s.buf[off-s.base:]...)), s.r), nil
}
