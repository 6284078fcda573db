package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"berth.dev/berth/nodes/api"
)

// stateFile holds the desired set under StateDir. It carries secret file
// contents and pull secrets, so it is readable by root only.
const stateFile = "desired.json"

// persisted is what the agent keeps across restarts.
type persisted struct {
	// Set is true once a desired set has been received.
	Set     bool            `json:"set"`
	Desired api.DesiredPods `json:"desired"`
	// InPlace lists, per pod UID, the earlier hashes whose containers
	// still fit the desired pod (it changed only in files content, which
	// is applied in place), so that they are adopted, not replaced.
	InPlace map[string][]string `json:"inPlace,omitempty"`
}

// loadState reads the persisted state; a missing file is an empty state.
func loadState(dir string) (persisted, error) {
	var p persisted
	err := loadJSON(dir, stateFile, &p)
	if err != nil {
		return p, fmt.Errorf("load desired pods: %w", err)
	}
	return p, nil
}

// saveState writes the state atomically (see writeFileAtomic).
func saveState(dir string, p persisted) error {
	if err := saveJSON(dir, stateFile, p); err != nil {
		return fmt.Errorf("save desired pods: %w", err)
	}
	return nil
}

// loadJSON decodes the file name under dir into v; a missing file leaves
// v as it is.
func loadJSON(dir, name string, v any) error {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// saveJSON writes v as the file name under dir, atomically and readable
// by root only (what the agent keeps carries secrets).
func saveJSON(dir, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, name, b, 0o600)
}

// writeFileAtomic writes a file atomically: a temporary file in the same
// directory, fsync, rename over the old one, fsync of the directory.
func writeFileAtomic(dir, name string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
