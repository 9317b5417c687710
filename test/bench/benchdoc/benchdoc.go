// Package benchdoc is what the benchmark commands under test/bench share:
// each writes its own generated block of docs/benchmarks.md, notes the
// machine's load beside its figures, and logs with the time of day.
package benchdoc

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Markers are the lines around the block the benchmark command name writes.
func Markers(name string) (begin, end string) {
	return fmt.Sprintf("<!-- bench:%s:begin (written by go run ./test/bench/%s -doc; edit outside these markers) -->", name, name),
		fmt.Sprintf("<!-- bench:%s:end -->", name)
}

// WriteSection replaces name's generated block in doc with body; the rest
// of doc stays as it is.
func WriteSection(doc, name, body string) error {
	begin, end := Markers(name)
	b, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q ... %q block", doc, begin, end)
	}
	s = s[:i+len(begin)] + "\n\n" + body + "\n" + s[j:]
	return os.WriteFile(doc, []byte(s), 0o644)
}

// LoadAvg is the 1, 5 and 15 minute load averages, "unknown" where
// /proc/loadavg cannot be read.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// Logf logs a line to stderr with the time of day.
func Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05")+" "+format+"\n", args...)
}
