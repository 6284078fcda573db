package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// stateFile is the lab's record, in its directory.
const stateFile = "lab.json"

// stateVersion is the format of lab.json.
const stateVersion = 1

// state is lab.json: what the lab is, and everything made for it. Up adds
// to it before making each thing (or, for processes, right after starting
// them), so that the record covers at least what exists.
type state struct {
	Version int       `json:"version"`
	Started time.Time `json:"started"`
	// Owner is the process that ran Up.
	Owner process `json:"owner"`
	// Ready is set when Up finished; UpSeconds is how long it took.
	Ready     time.Time `json:"ready,omitzero"`
	UpSeconds float64   `json:"upSeconds,omitempty"`
	Lab       *Lab      `json:"lab"`
	Made      made      `json:"made"`
}

// made is the inventory of what Up made outside files under Dir.
type made struct {
	// RunDir is set when the run directory lies outside Dir.
	RunDir string `json:"runDir,omitempty"`
	// NetnsDir and NetnsMount say whether Up created /run/netns and made
	// it a shared bind mount (iproute2 does both on first use).
	NetnsDir   bool      `json:"netnsDir,omitempty"`
	NetnsMount bool      `json:"netnsMount,omitempty"`
	Namespaces []string  `json:"namespaces,omitempty"` // names under /run/netns
	Links      []string  `json:"links,omitempty"`      // host namespace
	Routes     []route   `json:"routes,omitempty"`     // host namespace
	Processes  []process `json:"processes,omitempty"`
}

// route is a host route to dst through gw.
type route struct {
	Dst string `json:"dst"`
	Gw  string `json:"gw"`
}

// process is a daemon Up started. Start is its start time (clock ticks since
// boot, /proc/PID/stat field 22): a pid with another start time is another
// process.
type process struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// journal keeps lab.json in step with what Up makes. It is safe for
// concurrent use.
type journal struct {
	mu   sync.Mutex
	path string
	st   state
}

// record applies change to the state and writes it out atomically.
func (j *journal) record(change func(*state)) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	change(&j.st)
	return writeState(j.path, &j.st)
}

func writeState(path string, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("record lab state: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("record lab state: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
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
		return fmt.Errorf("record lab state: %w", err)
	}
	return nil
}

// errCorrupt marks a lab.json that exists but cannot be used.
var errCorrupt = errors.New("corrupt lab state")

// readState reads dir's lab.json: fs.ErrNotExist when there is none,
// errCorrupt when it cannot be decoded.
func readState(dir string) (*state, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errCorrupt, filepath.Join(dir, stateFile), err)
	}
	if st.Version != stateVersion || st.Lab == nil || st.Lab.Dir != dir {
		return nil, fmt.Errorf("%w: %s: version %d, directory %q", errCorrupt, filepath.Join(dir, stateFile), st.Version, labDir(st.Lab))
	}
	return &st, nil
}

func labDir(l *Lab) string {
	if l == nil {
		return ""
	}
	return l.Dir
}
