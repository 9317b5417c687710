package registry

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// FuzzParseHtpasswd: any file content parses or fails with a line number,
// never panics, and what parses holds only bcrypt hashes of named users.
func FuzzParseHtpasswd(f *testing.F) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	f.Add("ci:" + string(h) + "\n")
	f.Add("# comment\n\nedge:" + string(h) + "\r\nci:" + string(h))
	f.Add("edge:$apr1$x$y\n")
	f.Add(":" + string(h))
	f.Add("a:b:c\n")
	f.Add("ci:" + string(h) + "\nci:" + string(h) + "\n")
	f.Fuzz(func(t *testing.T, data string) {
		users, err := parseHtpasswd([]byte(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("error without a line number: %v", err)
			}
			return
		}
		for u, hash := range users {
			if u == "" || strings.ContainsAny(u, ":\n") {
				t.Fatalf("bad user name %q", u)
			}
			if _, err := bcrypt.Cost(hash); err != nil {
				t.Fatalf("user %q has a hash bcrypt cannot use: %v", u, err)
			}
		}
	})
}
