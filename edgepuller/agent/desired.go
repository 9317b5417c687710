package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/registry"
)

// Desired is one artifact a node should have.
type Desired struct {
	// Name identifies the artifact on the node and names its directory,
	// root/artifacts/<Name>: letters, digits, '.', '_' and '-', starting with
	// a letter or digit, optionally behind one "namespace/".
	Name string `json:"name"`
	// Reference is host[:port]/repository:tag or host[:port]/repository@sha256:….
	Reference string `json:"reference"`
	// Insecure reaches the registry over plain HTTP.
	Insecure bool `json:"insecure,omitempty"`
	// Verify, when Keys is set, asks for a signature check before activation (see
	// Options.Verify); the key material is the node's, never the entry's.
	Verify VerifyRef `json:"verify,omitzero"`
	// Upload, when its Round is set, asks for a trainer's update to be
	// uploaded once the artifact is Ready: the directory
	// root/uploads/<Name>/round-<Round>, once it holds DONE, is pushed as an
	// update artifact, a referrer of the Reference's digest.
	Upload UploadRef `json:"upload,omitzero"`
	// Peers are the site peers to try before the origin, space-separated
	// node=host:port pairs in order (see fetch.Options.Peers). A string,
	// not a slice, so that desired lists compare with ==.
	Peers string `json:"peers,omitempty"`
}

// UploadRef is one round's update to upload. It is comparable, so desired
// lists compare with ==.
type UploadRef struct {
	// Round of the training, from 1.
	Round int `json:"round"`
	// Repository the update is pushed to, host[:port]/path without a tag;
	// over plain HTTP when the entry is Insecure.
	Repository string `json:"repository"`
	// Run is annotated on the update, so that two trainings from one base
	// never mix their updates.
	Run string `json:"run,omitempty"`
}

// VerifyRef says which of the node's key material a signature must verify
// with: Keys names it (a NodeArtifact's Secret or ConfigMap name), Provider
// is cosign or notation. It is comparable, so desired lists compare with ==.
type VerifyRef struct {
	Provider string `json:"provider,omitempty"`
	Keys     string `json:"keys"`
	// Index, when set, is the digest of the joint model's index that
	// carries the signature: the entry's manifest is that index's edge
	// part, which is not signed on its own.
	Index string `json:"index,omitempty"`
}

var nameSegment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// maxName keeps root/artifacts/<name>/versions/sha256-<hex> within the
// file-name limits of common filesystems.
const maxName = 200

// Validate checks one entry on its own.
func (d Desired) Validate() error {
	segs := strings.Split(d.Name, "/")
	switch {
	case d.Name == "":
		return errors.New("name is empty")
	case len(d.Name) > maxName:
		return fmt.Errorf("name %q is longer than %d characters", d.Name, maxName)
	case len(segs) > 2:
		return fmt.Errorf("name %q has more than one '/': use name or namespace/name", d.Name)
	}
	if k := d.Verify.Keys; k != "" && !nameSegment.MatchString(k) {
		return fmt.Errorf("verify keys %q: name key material with letters, digits, '.', '_' and '-', starting with a letter or digit", k)
	}
	if i := d.Verify.Index; i != "" {
		if d.Verify.Keys == "" {
			return fmt.Errorf("verify index %s names no key material to verify it with", i)
		}
		if _, err := digest.Parse(i); err != nil {
			return fmt.Errorf("verify index %q: not a digest: %v", i, err)
		}
	}
	switch d.Verify.Provider {
	case "", "cosign", "notation":
	default:
		return fmt.Errorf("verify provider %q: use cosign or notation", d.Verify.Provider)
	}
	for _, s := range segs {
		if !nameSegment.MatchString(s) {
			return fmt.Errorf("name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit, and at most one '/'", d.Name)
		}
	}
	if d.Reference == "" {
		return fmt.Errorf("artifact %s has no reference", d.Name)
	}
	ref, err := registry.ParseReference(d.Reference)
	if err != nil {
		return fmt.Errorf("artifact %s: reference %q: %w", d.Name, d.Reference, err)
	}
	if ref.Reference == "" {
		return fmt.Errorf("artifact %s: reference %q names no version: add :tag or @sha256:…", d.Name, d.Reference)
	}
	if _, err := ParsePeers(d.Peers); err != nil {
		return fmt.Errorf("artifact %s: peers: %w", d.Name, err)
	}
	return d.Upload.validate(d.Name, ref)
}

// validate checks an upload request; the zero UploadRef asks for none.
func (u UploadRef) validate(name string, base registry.Reference) error {
	if u == (UploadRef{}) {
		return nil
	}
	if u.Round < 1 {
		return fmt.Errorf("artifact %s: upload round is %d: rounds count from 1", name, u.Round)
	}
	if _, err := base.Digest(); err != nil {
		return fmt.Errorf("artifact %s: an upload needs the base model by digest (@sha256:…), not %q: an update names the exact model it was trained from", name, base.Reference)
	}
	repo, err := registry.ParseReference(u.Repository)
	if err != nil || repo.Reference != "" {
		return fmt.Errorf("artifact %s: upload repository %q: give host[:port]/path, without tag or digest", name, u.Repository)
	}
	return nil
}

// EntryError says which entry of a desired list is wrong.
type EntryError struct {
	Index int // 0-based
	Name  string
	Err   error
}

func (e *EntryError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("artifact #%d: %v", e.Index+1, e.Err)
	}
	return fmt.Sprintf("artifact #%d (%s): %v", e.Index+1, e.Name, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// Validate checks a desired list: every entry, and that no two entries
// claim one directory. It returns the first problem as an *EntryError.
func Validate(list []Desired) error {
	var taken names
	for i, d := range list {
		if err := taken.add(d); err != nil {
			return &EntryError{Index: i, Name: d.Name, Err: err}
		}
	}
	return nil
}

// names are the directories a list of artifacts has taken, to find an
// overlap in constant time: a list of thousands of NodeArtifacts is
// checked on every change, so a pairwise check does not scale.
type names struct {
	taken   map[string]bool   // every name
	parents map[string]string // first segment of a namespace/name → that name
}

// add validates d and takes its name, or says whose directory it overlaps:
// the same name, or one is the other's namespace.
func (n *names) add(d Desired) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if n.taken == nil {
		n.taken, n.parents = map[string]bool{}, map[string]string{}
	}
	prev := ""
	if ns, _, nested := strings.Cut(d.Name, "/"); nested && n.taken[ns] {
		prev = ns
	} else if child, ok := n.parents[d.Name]; !nested && ok {
		prev = child
	} else if n.taken[d.Name] {
		prev = d.Name
	}
	if prev != "" {
		return fmt.Errorf("its directory overlaps that of artifact %s", prev)
	}
	n.taken[d.Name] = true
	if ns, _, nested := strings.Cut(d.Name, "/"); nested {
		if _, ok := n.parents[ns]; !ok {
			n.parents[ns] = d.Name
		}
	}
	return nil
}

// overlaps reports whether two names share a directory: the same name, or
// one is the other's namespace.
func overlaps(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// desiredFile is root/desired.json.
type desiredFile struct {
	Artifacts []Desired `json:"artifacts"`
}

// loadDesired reads the list persisted by a previous run. ok is false when
// there is none.
func loadDesired(path string) (list []Desired, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read the persisted desired state: %w", err)
	}
	var f desiredFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, false, fmt.Errorf("persisted desired state %s is damaged (%v): ignoring it until the source sends a list", path, err)
	}
	return f.Artifacts, true, nil
}

func saveDesired(path string, list []Desired) error {
	if list == nil {
		list = []Desired{}
	}
	b, err := json.MarshalIndent(desiredFile{Artifacts: list}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// writeFileAtomic replaces path with b so that a crash leaves the old
// content or the new one, never a mix.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
