package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// sessionState is what StateDir keeps of one unfinished upload, rewritten
// after every acknowledged chunk. The registry stays the authority on the
// offset: a resume asks it (GET on Location) and trusts its answer over
// Offset, which only says how far the upload had got, for the log.
type sessionState struct {
	Repository string        `json:"repository"` // host/name
	Digest     digest.Digest `json:"digest"`
	Size       int64         `json:"size"`
	Location   string        `json:"location"`
	Offset     int64         `json:"offset"`
	Updated    time.Time     `json:"updated"`
}

// stateFiles names the files of one upload in StateDir: the state, and the
// lock that keeps two processes from driving one session at once.
type stateFiles struct {
	dir, key string
}

func newStateFiles(dir, repo string, d digest.Digest) stateFiles {
	h := sha256.Sum256([]byte(repo + "@" + d.String()))
	return stateFiles{dir: dir, key: d.Encoded() + "-" + hex.EncodeToString(h[:8])}
}

func (f stateFiles) enabled() bool { return f.dir != "" }
func (f stateFiles) path() string  { return filepath.Join(f.dir, f.key+".json") }

// load returns the saved session of this upload, or ok false if there is
// none that can be used. A damaged or foreign file is not an error: the
// upload starts again.
func (f stateFiles) load(repo string, d digest.Digest, size int64) (st sessionState, ok bool, why string) {
	if !f.enabled() {
		return st, false, ""
	}
	b, err := os.ReadFile(f.path())
	if errors.Is(err, fs.ErrNotExist) {
		return st, false, ""
	}
	if err != nil {
		return st, false, err.Error()
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, false, "unreadable: " + err.Error()
	}
	if st.Repository != repo || st.Digest != d || st.Size != size || st.Location == "" || st.Offset < 0 || st.Offset > size {
		return st, false, "it describes another upload"
	}
	return st, true, ""
}

// save replaces the state so that a crash leaves the old one or the new
// one, never a mix: write a temporary file, fsync, rename, fsync the
// directory.
func (f stateFiles) save(st sessionState) error {
	if !f.enabled() {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(f.dir, "."+f.key+".tmp-")
	if err != nil {
		return fmt.Errorf("save upload state: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.path())
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save upload state: %w", err)
	}
	return syncDir(f.dir)
}

func (f stateFiles) remove() error {
	if !f.enabled() {
		return nil
	}
	if err := os.Remove(f.path()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove upload state: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// lockPoll bounds how long a waiter sleeps between tries: flock(2) cannot
// be interrupted by a context, so waiters poll with LOCK_NB.
const lockPoll = 100 * time.Millisecond

// lock takes an flock on the upload's lock file, waiting until ctx ends for
// another process that holds it. The kernel drops an flock when its holder
// dies, even by SIGKILL, so a killed push never leaves a stale lock. The
// lock file stays: removing it would let a waiter lock an unlinked file.
func (f stateFiles) lock(ctx context.Context) (unlock func(), err error) {
	if !f.enabled() {
		return func() {}, nil
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create upload state directory: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(f.dir, f.key+".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open upload lock: %w", err)
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { lf.Close() }, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			lf.Close()
			return nil, fmt.Errorf("lock upload state: %w", err)
		}
		select {
		case <-ctx.Done():
			lf.Close()
			return nil, fmt.Errorf("wait for another process uploading the same blob: %w", ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, lockPoll)
	}
}
