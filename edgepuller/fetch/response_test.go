package fetch

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want contentRange
		ok   bool
	}{
		{"bytes 0-99/100", contentRange{0, 99, 100}, true},
		{"bytes 50-99/100", contentRange{50, 99, 100}, true},
		{"bytes 50-99/*", contentRange{50, 99, -1}, true},
		{"bytes 99-99/100", contentRange{99, 99, 100}, true},
		{"", contentRange{}, false},
		{"bytes */100", contentRange{}, false}, // the 416 form
		{"bytes 50-49/100", contentRange{}, false},
		{"bytes 50-100/100", contentRange{}, false},
		{"bytes +5-99/100", contentRange{}, false},
		{"bytes -5-99/100", contentRange{}, false},
		{"items 0-99/100", contentRange{}, false},
		{"bytes 0-99", contentRange{}, false},
		{"bytes 0-99/100 ", contentRange{}, false},
		{"bytes 0-99999999999999999999/100", contentRange{}, false},
	} {
		got, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseContentRange(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzParseContentRange: the header comes from the network. Whatever the
// parser accepts must describe a range a resume can trust.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 5-9/*", "bytes */10", "", "bytes 1-0/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cr, err := parseContentRange(s)
		if err != nil {
			return
		}
		if cr.First < 0 || cr.Last < cr.First || (cr.Total != -1 && cr.Last >= cr.Total) {
			t.Fatalf("accepted %q as %+v", s, cr)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1", time.Second, true},
		{" 30 ", 30 * time.Second, true},
		{"0", 0, true},
		{now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second, true},
		{"Fri, 01 May 2026 12:00:07 GMT", 7 * time.Second, true},
		{"Fri, 01 May 2026 11:00:00 GMT", 0, true}, // in the past: go now
		{"86400", maxRetryAfter, true},
		{"99999999999999999999999", 0, false},
		{"-1", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRegistryMessage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`, "BLOB_UNKNOWN: blob unknown to registry"},
		{"<html>\n  Bad   gateway\n</html>", "<html> Bad gateway </html>"},
		{"", ""},
		{strings.Repeat("x", 5000), strings.Repeat("x", 300) + "…"},
	} {
		if got := registryMessage(strings.NewReader(tc.in)); got != tc.want {
			t.Errorf("registryMessage(%.20q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDefaultBackoff(t *testing.T) {
	for attempt, ceiling := range map[int]time.Duration{1: 200 * time.Millisecond, 3: 800 * time.Millisecond, 7: 10 * time.Second, 100: 10 * time.Second} {
		for range 100 {
			if d := DefaultBackoff(attempt); d < 0 || d > ceiling {
				t.Fatalf("DefaultBackoff(%d) = %v, want within [0, %v]", attempt, d, ceiling)
			}
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"2M": 2 << 20, "10G": 10 << 30, "500k": 500 << 10, "1.5M": 3 << 19, "4096": 4096, "2MiB": 2 << 20} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "fast", "0"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) accepted", in)
		}
	}
}
