package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// keyedMutex serialises writers of one digest inside this process. It comes
// before the flock so that only one goroutine per process polls the file lock,
// and so that waiting honours ctx.
type keyedMutex struct {
	mu    sync.Mutex
	slots map[digest.Digest]*slot
}

type slot struct {
	ch   chan struct{} // holds one token while locked
	refs int
}

func (k *keyedMutex) lock(ctx context.Context, d digest.Digest) error {
	k.mu.Lock()
	if k.slots == nil {
		k.slots = make(map[digest.Digest]*slot)
	}
	s := k.slots[d]
	if s == nil {
		s = &slot{ch: make(chan struct{}, 1)}
		k.slots[d] = s
	}
	s.refs++
	k.mu.Unlock()

	select {
	case s.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		k.release(d, s)
		return ctx.Err()
	}
}

func (k *keyedMutex) unlock(d digest.Digest) {
	k.mu.Lock()
	s := k.slots[d]
	k.mu.Unlock()
	<-s.ch
	k.release(d, s)
}

func (k *keyedMutex) release(d digest.Digest, s *slot) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.refs--; s.refs == 0 {
		delete(k.slots, d)
	}
}

// ingestLock is held by whoever writes, commits or aborts one ingest: the
// in-process slot plus an flock on ingest/<hex>/lock against other processes.
// The kernel drops an flock when its holder dies, even by SIGKILL, so a
// crashed puller never leaves a stale lock behind.
type ingestLock struct {
	s    *Store
	d    digest.Digest
	file *os.File
}

func (s *Store) lockIngest(ctx context.Context, d digest.Digest) (*ingestLock, error) {
	if err := s.locks.lock(ctx, d); err != nil {
		return nil, fmt.Errorf("%s: wait for another download of the same blob in this process: %w", d, err)
	}
	f, err := s.flockIngest(ctx, d)
	if err != nil {
		s.locks.unlock(d)
		return nil, err
	}
	return &ingestLock{s: s, d: d, file: f}, nil
}

func (l *ingestLock) unlock() {
	if l == nil || l.file == nil {
		return
	}
	l.file.Close() // closing the only descriptor releases the flock
	l.file = nil
	l.s.locks.unlock(l.d)
}

// flockPoll bounds how long a waiter sleeps between tries. flock(2) cannot
// be interrupted by a context, so waiters poll with LOCK_NB instead of
// blocking a thread they could never get back.
const flockPoll = 50 * time.Millisecond

func (s *Store) flockIngest(ctx context.Context, d digest.Digest) (*os.File, error) {
	dir := s.ingestDir(d)
	path := filepath.Join(dir, "lock")
	wait := time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s: wait for the ingest lock held by another process: %w", d, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("%s: create ingest directory: %w", d, err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a committer removed the directory between MkdirAll and OpenFile
		}
		if err != nil {
			return nil, fmt.Errorf("%s: open ingest lock: %w", d, err)
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err != unix.EWOULDBLOCK && err != unix.EINTR {
				break
			}
			select {
			case <-ctx.Done():
				f.Close()
				return nil, fmt.Errorf("%s: wait for the ingest lock held by another process: %w", d, ctx.Err())
			case <-time.After(wait):
			}
			wait = min(2*wait, flockPoll)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: lock ingest: %w", d, err)
		}
		// The holder we waited for may have committed and removed the ingest
		// directory, leaving us locking an unlinked file that a newcomer
		// cannot see. The lock only counts if the path still names our file.
		held, err1 := f.Stat()
		named, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, named) {
			return f, nil
		}
		f.Close()
	}
}
