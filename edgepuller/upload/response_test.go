package upload

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0-0", 0, true}, // empty, or one byte: read as empty (see parseRange)
		{"0-4194303", 4 << 20, true},
		{"bytes=0-99", 100, true},
		{" 0-99 ", 100, true},
		{"1-99", 0, false}, // an upload always starts at 0
		{"0-", 0, false},
		{"-5", 0, false},
		{"0-+5", 0, false},
		{"0--5", 0, false},
		{"0-9223372036854775807", 0, false}, // one more would overflow
		{"0-99999999999999999999", 0, false},
		{"", 0, false},
		{"bytes 0-99/100", 0, false},
	} {
		got, err := parseRange(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRange(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzParseRange: the Range header comes from the registry; no input may
// panic, and what is accepted is a byte count that reads back the same.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"0-0", "0-1", "bytes=0-4194303", "0-", "1-2", "0-9223372036854775806", "٠-١"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		n, err := parseRange(h)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("parseRange(%q) = %d", h, n)
		}
		if n > 0 {
			again, err := parseRange("0-" + strconv.FormatInt(n-1, 10))
			if err != nil || again != n {
				t.Fatalf("parseRange(%q) = %d, but 0-%d reads %d, %v", h, n, n-1, again, err)
			}
		}
	})
}

func TestLocation(t *testing.T) {
	base, _ := url.Parse("https://registry.example.com/v2/models/a/blobs/uploads/")
	for _, tc := range []struct {
		loc string
		ok  bool
	}{
		{"/v2/models/a/blobs/uploads/u1?_state=x", true},
		{"https://registry.example.com:443/v2/models/a/blobs/uploads/u1", true},
		{"https://evil.example.com/v2/models/a/blobs/uploads/u1", false},
		{"http://registry.example.com/v2/models/a/blobs/uploads/u1", false},
		{"ftp://registry.example.com/x", false},
		{"", false},
		{"%zz", false},
	} {
		_, err := location(base, tc.loc)
		if (err == nil) != tc.ok {
			t.Errorf("location(%q): %v; want ok %v", tc.loc, err, tc.ok)
		}
	}
}

// FuzzLocation: an upload Location comes from the registry, and the next
// request carries credentials to it; whatever it says, it never leaves the
// registry's host.
func FuzzLocation(f *testing.F) {
	for _, s := range []string{"/v2/a/blobs/uploads/u?_state=x", "https://other/x", "//other/x", "http://registry.example.com/x", "https://registry.example.com:443/x", "https://registry.example.com@other/x"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://registry.example.com/v2/a/blobs/uploads/")
	f.Fuzz(func(t *testing.T, loc string) {
		u, err := location(base, loc)
		if err != nil {
			return
		}
		if u.Scheme != "https" || u.Hostname() != "registry.example.com" || (u.Port() != "" && u.Port() != "443") || strings.Contains(u.Host, "@") {
			t.Fatalf("location(%q) = %s: leaves the registry", loc, u)
		}
	})
}
