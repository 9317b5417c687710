package fetch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// contentRange is a parsed "Content-Range: bytes first-last/total" header.
// Total is -1 when the server sent "*".
type contentRange struct {
	First, Last, Total int64
}

// parseContentRange reads the header of a 206 response. It comes from the
// network, so it refuses anything it cannot vouch for.
func parseContentRange(h string) (contentRange, error) {
	bad := func() (contentRange, error) { return contentRange{}, fmt.Errorf("malformed Content-Range %q", h) }
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return bad()
	}
	span, total, ok := strings.Cut(rest, "/")
	if !ok {
		return bad()
	}
	first, last, ok := strings.Cut(span, "-")
	if !ok {
		return bad()
	}
	cr := contentRange{Total: -1}
	var err error
	if cr.First, err = parseUint(first); err != nil {
		return bad()
	}
	if cr.Last, err = parseUint(last); err != nil || cr.Last < cr.First {
		return bad()
	}
	if total != "*" {
		if cr.Total, err = parseUint(total); err != nil || cr.Last >= cr.Total {
			return bad()
		}
	}
	return cr, nil
}

func parseUint(s string) (int64, error) {
	if s == "" || s[0] < '0' || s[0] > '9' { // ParseInt would accept "+1"
		return 0, errors.New("not a number")
	}
	return strconv.ParseInt(s, 10, 64)
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date
// (RFC 9110 §10.2.3). It returns false if there is none or it is unreadable.
// The wait is capped at maxRetryAfter.
func parseRetryAfter(h string, now time.Time) (time.Duration, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	var d time.Duration
	if secs, err := parseUint(h); err == nil {
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = max(t.Sub(now), 0)
	} else {
		return 0, false
	}
	return min(d, maxRetryAfter), true
}

// registryMessage summarises an error response body for the user: the
// distribution spec's {"errors":[{"code","message"}]} or the start of the
// text. It reads at most a few KiB.
func registryMessage(body io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(body, 4<<10))
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(b, &doc) == nil && len(doc.Errors) > 0 {
		var parts []string
		for _, e := range doc.Errors {
			parts = append(parts, strings.TrimSpace(e.Code+": "+e.Message))
		}
		return truncate(strings.Join(parts, "; "), 300)
	}
	return truncate(strings.Join(strings.Fields(string(b)), " "), 300)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
