package registry

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// access is what a user may do.
type access uint8

const (
	accessNone access = iota
	accessRead
	accessReadWrite
)

// htpasswd is one htpasswd file, read again when it changes on disk, so
// that a rotated Kubernetes Secret takes effect without a restart.
type htpasswd struct {
	path string

	mu    sync.Mutex
	stamp fileStamp
	users map[string][]byte // user → bcrypt hash
}

type fileStamp struct {
	mtime time.Time
	size  int64
}

// parseHtpasswd reads "user:bcrypt-hash" lines, as `htpasswd -B` writes
// them and distribution and Zot read them. Blank lines and lines starting
// with # are skipped. Any other hash scheme (MD5, SHA1, crypt) is refused:
// those are fast to brute-force, and distribution does not accept them
// either.
func parseHtpasswd(data []byte) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok || user == "":
			return nil, fmt.Errorf("line %d: not user:hash", n)
		case !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") && !strings.HasPrefix(hash, "$2y$"):
			return nil, fmt.Errorf("line %d: user %q: not a bcrypt hash; create entries with `htpasswd -B`", n, user)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d: user %q: %v", n, user, err)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("line %d: user %q appears twice", n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return users, nil
}

// load returns the users of the file, reading it again if it changed. A
// file that became unreadable or malformed keeps the users last read: a
// half-written update must not lock everybody out, nor let anybody in.
func (h *htpasswd) load() (map[string][]byte, bool, error) {
	fi, err := os.Stat(h.path)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		return h.users, false, fmt.Errorf("htpasswd file %s: %w", h.path, err)
	}
	stamp := fileStamp{fi.ModTime(), fi.Size()}
	if h.users != nil && stamp == h.stamp {
		return h.users, false, nil
	}
	data, err := os.ReadFile(h.path)
	if err != nil {
		return h.users, false, fmt.Errorf("htpasswd file %s: %w", h.path, err)
	}
	users, err := parseHtpasswd(data)
	if err != nil {
		return h.users, false, fmt.Errorf("htpasswd file %s: %w", h.path, err)
	}
	h.users, h.stamp = users, stamp
	return users, true, nil
}

// authenticator checks HTTP basic credentials against a read-write and a
// read-only htpasswd file. Distribution's own htpasswd auth knows one
// class of user; read-only users are what pullers need.
type authenticator struct {
	readWrite, readOnly *htpasswd // either may be nil

	// Verified credentials, keyed by a salted hash of user and password:
	// bcrypt costs tens of milliseconds, and a pull makes a request per
	// blob. Cleared whenever a file changes, so a removed user is out at
	// once. Failures are never cached.
	mu    sync.Mutex
	salt  [32]byte
	known map[[32]byte]access
}

func newAuthenticator(readWrite, readOnly string) (*authenticator, error) {
	a := &authenticator{known: map[[32]byte]access{}}
	rand.Read(a.salt[:])
	if readWrite != "" {
		a.readWrite = &htpasswd{path: readWrite}
	}
	if readOnly != "" {
		a.readOnly = &htpasswd{path: readOnly}
	}
	// Fail at start, not at the first request, on a missing or bad file,
	// and on a user in both files: which access was meant is unclear.
	rw, ro, _, err := a.users()
	if err != nil {
		return nil, err
	}
	for u := range ro {
		if _, ok := rw[u]; ok {
			return nil, fmt.Errorf("user %q is in both the read-write htpasswd file %s and the read-only one %s: keep it in one", u, readWrite, readOnly)
		}
	}
	return a, nil
}

func (a *authenticator) users() (rw, ro map[string][]byte, changed bool, err error) {
	var c1, c2 bool
	if a.readWrite != nil {
		if rw, c1, err = a.readWrite.load(); err != nil && rw == nil {
			return nil, nil, false, err
		}
	}
	if a.readOnly != nil {
		if ro, c2, err = a.readOnly.load(); err != nil && ro == nil {
			return nil, nil, false, err
		}
	}
	return rw, ro, c1 || c2, nil
}

// check returns what the credentials allow.
func (a *authenticator) check(user, password string) access {
	rw, ro, changed, err := a.users()
	if err != nil {
		return accessNone
	}
	// The user's length first: "a\x00b"/"c" and "a"/"b\x00c" are different keys.
	key := sha256.Sum256(fmt.Appendf(a.salt[:len(a.salt):len(a.salt)], "%d:%s%s", len(user), user, password))
	a.mu.Lock()
	if changed {
		clear(a.known)
	}
	got, ok := a.known[key]
	a.mu.Unlock()
	if ok {
		return got
	}
	got = accessNone
	// A user in both files was refused at start; one added to both later
	// gets the lesser access.
	if hash, ok := ro[user]; ok {
		if bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil {
			got = accessRead
		}
	} else if hash, ok := rw[user]; ok {
		if bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil {
			got = accessReadWrite
		}
	} else {
		// Spend the same time on an unknown user as on a wrong password,
		// so that timing does not tell which users exist.
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
	}
	if got != accessNone {
		a.mu.Lock()
		if len(a.known) > 10_000 {
			clear(a.known)
		}
		a.known[key] = got
		a.mu.Unlock()
	}
	return got
}

// dummyHash is made on first use: every program that imports the package
// would otherwise pay a bcrypt at start.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("barge"), bcrypt.DefaultCost)
	return h
})

// wrap puts the authenticator in front of the registry: no credentials or
// wrong ones get 401 with a Basic challenge; a read-only user gets 403 on
// anything but GET and HEAD, before the registry sees the request, so a
// refused push stores nothing.
func (a *authenticator) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, password, ok := r.BasicAuth()
		got := accessNone
		if ok {
			got = a.check(user, password)
		}
		switch {
		case got == accessNone:
			w.Header().Set("WWW-Authenticate", `Basic realm="barge"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		case got == accessRead && r.Method != http.MethodGet && r.Method != http.MethodHead:
			writeError(w, http.StatusForbidden, "DENIED", fmt.Sprintf("user %q may only pull (GET, HEAD), not %s", user, r.Method))
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// writeError answers in the error format of the OCI distribution spec, which
// clients such as oras print.
func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.WriteHeader(status)
	type oerr struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	json.NewEncoder(w).Encode(struct {
		Errors []oerr `json:"errors"`
	}{[]oerr{{code, message}}})
}
