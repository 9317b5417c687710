package dataset

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// maxJSONLine bounds one JSONL record; a longer line is reported and skipped.
const maxJSONLine = 16 << 20

func analyzeJSONL(ctx context.Context, dir string, _ Options, acc *accumulator) error {
	return walk(ctx, dir, func(rel, abs string, _ fs.DirEntry) error {
		switch strings.ToLower(path.Ext(rel)) {
		case ".jsonl", ".ndjson":
		default:
			return nil
		}
		return parseFile(acc, abs, rel, func(r io.Reader) error {
			return parseJSONL(ctx, r, rel, splitOfFile(rel), acc)
		})
	})
}

// parseJSONL counts the JSON lines of one file of split. The label of an
// object is its "label" or "class" field: a string, number or boolean, or a
// list of them for a multi-label sample.
func parseJSONL(ctx context.Context, r io.Reader, rel, split string, acc *accumulator) error {
	sc := newLineScanner(r, maxJSONLine)
	var labels []string
	for sc.Scan() {
		if sc.Line()%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if sc.TooLong() {
			acc.problem(rel, sc.Line(), "line longer than %d MiB: not counted", maxJSONLine>>20)
			continue
		}
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) {
			acc.problem(rel, sc.Line(), "invalid JSON: %s: not counted", jsonError(line))
			continue
		}
		labels = jsonlLabels(line, labels[:0])
		acc.sample(split, labels...)
	}
	if err := sc.Err(); err != nil {
		acc.problem(rel, sc.Line(), "read: %v", err)
	}
	return nil
}

// jsonError says what is wrong with invalid JSON.
func jsonError(line []byte) string {
	var v any
	err := json.Unmarshal(line, &v)
	if err == nil {
		return "invalid"
	}
	if se, ok := err.(*json.SyntaxError); ok {
		return strconv.Quote(string(line[:min(int(se.Offset), len(line), 40)])) + " then " + se.Error()
	}
	return err.Error()
}

// jsonlLabels appends the labels of a valid JSON line to dst.
func jsonlLabels(line []byte, dst []string) []string {
	if line[0] != '{' {
		return dst
	}
	var rec struct {
		Label json.RawMessage `json:"label"`
		Class json.RawMessage `json:"class"`
	}
	if json.Unmarshal(line, &rec) != nil {
		return dst
	}
	raw := rec.Label
	if len(raw) == 0 {
		raw = rec.Class
	}
	var list []json.RawMessage
	if len(raw) > 0 && raw[0] == '[' && json.Unmarshal(raw, &list) == nil {
		for _, v := range list {
			dst = appendLabel(dst, v)
		}
		return dst
	}
	return appendLabel(dst, raw)
}

func appendLabel(dst []string, raw json.RawMessage) []string {
	if len(raw) == 0 {
		return dst
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) != "" {
			dst = append(dst, strings.TrimSpace(s))
		}
	case '{', '[', 'n':
		// objects, nested lists and null are not class names
	default:
		dst = append(dst, string(raw)) // a number or boolean, as written
	}
	return dst
}
