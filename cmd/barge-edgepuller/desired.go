package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/bargeml/barge/edgepuller/agent"
)

// fileSource is the standalone mode's desired state: a YAML file, polled
// for changes (no inotify on many edge systems, and none through some
// container mounts).
type fileSource struct {
	path     string
	interval time.Duration
	log      *slog.Logger
}

// stamp tells one version of the file from another without reading it.
// The inode catches an editor or a ConfigMap that replaces the file by
// renaming a new one over it.
type stamp struct {
	exists bool
	mtime  time.Time
	size   int64
	inode  uint64
}

// settle is how old a change must be before it is read, so that a file
// caught halfway through being written is not taken for the new list.
const settle = 200 * time.Millisecond

// maxDesiredFile bounds what is read: a list of artifacts is small.
const maxDesiredFile = 1 << 20

func (f *fileSource) Watch(ctx context.Context, set func([]agent.Desired)) error {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	last := stamp{size: -1} // differs from any real state, so the first poll reports
	first := true
	for {
		s, err := statFile(f.path)
		switch {
		case err != nil:
			if first || s != last {
				f.log.Error("cannot read the desired file; keeping the last desired state", "file", f.path, "err", err)
			}
			last = s
		case s != last && (!s.exists || time.Since(s.mtime) >= settle):
			last = s
			if !s.exists {
				f.log.Warn("desired file does not exist; keeping the last desired state", "file", f.path)
				break
			}
			list, err := readDesired(f.path)
			if err != nil {
				f.log.Error(err.Error()+"; keeping the last good desired state", "file", f.path)
				break
			}
			f.log.Info("desired file read", "file", f.path, "artifacts", len(list))
			set(list)
		}
		first = false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func statFile(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return stamp{}, nil
	}
	if err != nil {
		return stamp{}, err
	}
	return stamp{exists: true, mtime: fi.ModTime(), size: fi.Size(), inode: inodeOf(fi)}, nil
}

func readDesired(path string) ([]agent.Desired, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("desired file %s: %w", path, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxDesiredFile+1))
	if err != nil {
		return nil, fmt.Errorf("desired file %s: %w", path, err)
	}
	if len(b) > maxDesiredFile {
		return nil, fmt.Errorf("desired file %s is larger than %d KiB", path, maxDesiredFile>>10)
	}
	list, err := parseDesired(b)
	if err != nil {
		return nil, fmt.Errorf("desired file %s%w", path, err)
	}
	return list, nil
}

// desiredDoc is the file's shape. Artifacts is a pointer so that a file
// without the key (empty, or truncated) is told from `artifacts: []`,
// which removes everything.
type desiredDoc struct {
	Artifacts *[]agent.Desired `json:"artifacts"`
}

// lineError is a problem at a line of the file (0 when unknown).
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf(", line %d: %s", e.line, e.msg)
	}
	return ": " + e.msg
}

var (
	yamlLine     = regexp.MustCompile(`^(?:error converting YAML to JSON: )?yaml: (?:unmarshal errors:\s*)?line (\d+): ([^\n]*)`)
	unknownField = regexp.MustCompile(`unknown field "([^"]+)"`)
	jsonField    = regexp.MustCompile(`Go struct field [A-Za-z]*\.?([A-Za-z]+(?:\.[A-Za-z]+)*) of type`)
)

// parseDesired reads and validates the YAML. Its errors start with ", line
// N: " or ": ", to follow the file's name.
func parseDesired(b []byte) ([]agent.Desired, error) {
	var doc desiredDoc
	if err := yaml.UnmarshalStrict(b, &doc); err != nil {
		return nil, explainYAML(b, err)
	}
	if doc.Artifacts == nil {
		return nil, &lineError{msg: "no artifacts: list (write `artifacts: []` to remove every artifact)"}
	}
	list := *doc.Artifacts
	if err := agent.Validate(list); err != nil {
		var ee *agent.EntryError
		line := 0
		if errors.As(err, &ee) {
			line = entryLine(b, ee.Index)
		}
		return nil, &lineError{line: line, msg: err.Error()}
	}
	return list, nil
}

// explainYAML turns the YAML and JSON decoders' errors into a line and a
// message a person editing the file understands.
func explainYAML(b []byte, err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		// The YAML parser (unlike its scanner) counts lines from 0 in
		// these messages.
		if strings.HasPrefix(m[2], "did not find expected") {
			n++
		}
		return &lineError{line: n, msg: m[2]}
	}
	msg = strings.TrimPrefix(msg, "error unmarshaling JSON: while decoding JSON: ")
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		return &lineError{line: keyLine(b, m[1]), msg: fmt.Sprintf("unknown field %q: an artifact has name, reference, insecure, verify and upload", m[1])}
	}
	if m := jsonField.FindStringSubmatch(msg); m != nil {
		parts := strings.Split(m[1], ".")
		return &lineError{line: keyLine(b, strings.ToLower(parts[len(parts)-1])), msg: msg}
	}
	return &lineError{msg: msg}
}

// keyLine is the first line where key is a mapping key, 0 if none is.
func keyLine(b []byte, key string) int {
	re := regexp.MustCompile(`^\s*(?:-\s+)?["']?` + regexp.QuoteMeta(key) + `["']?\s*:`)
	for i, l := range bytes.Split(b, []byte("\n")) {
		if re.Match(l) {
			return i + 1
		}
	}
	return 0
}

// entryLine finds where the index-th item of the artifacts list starts, in
// block style ("- name: …" lines); 0 when the file is written otherwise.
func entryLine(b []byte, index int) int {
	lines := bytes.Split(b, []byte("\n"))
	in, indent, n := false, -1, 0
	for i, l := range lines {
		s := string(l)
		trimmed := strings.TrimLeft(s, " ")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		depth := len(s) - len(trimmed)
		if !in {
			if depth == 0 && strings.HasPrefix(trimmed, "artifacts:") {
				in = true
			}
			continue
		}
		if depth == 0 && !strings.HasPrefix(trimmed, "-") {
			break // the next top-level key
		}
		if strings.HasPrefix(trimmed, "- ") || trimmed == "-" {
			if indent < 0 {
				indent = depth
			}
			if depth == indent {
				if n == index {
					return i + 1
				}
				n++
			}
		}
	}
	return 0
}
