package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
)

func fileKind(m fs.FileMode) string {
	if m&fs.ModeSymlink != 0 {
		return "symlink"
	}
	return "special file"
}

// checkUpdate refuses, before a byte leaves the node, an update whose
// weights cannot be averaged with the base model's: FedAvg averages file by
// file and tensor by tensor, so every *.safetensors file of the update must
// be a file of the base, which the node holds, with the same tensor names,
// dtypes and shapes; and only regular files go
// (a symlink may point anywhere on the node). A refused update names the
// file and what is wrong, for the trainer's author.
func (w *worker) checkUpdate(dir string, base digest.Digest) error {
	baseDir := filepath.Join(w.root, "versions", string(base.Algorithm())+"-"+base.Encoded())
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			// A symlink could hand the node's other files to the registry.
			return fmt.Errorf("%s is a %s: an update holds regular files only", filepath.ToSlash(rel), fileKind(d.Type()))
		}
		if !strings.HasSuffix(d.Name(), ".safetensors") {
			return nil
		}
		baseFile := filepath.Join(baseDir, rel)
		if _, err := os.Stat(baseFile); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: the base model has no file of that name: write the base model's weight files, retrained", filepath.ToSlash(rel))
		} else if err != nil {
			return fmt.Errorf("%s: read the base model's file: %w", filepath.ToSlash(rel), err)
		}
		if err := sameTensors(p, baseFile); err != nil {
			return fmt.Errorf("%s: %w", filepath.ToSlash(rel), err)
		}
		return nil
	})
}
