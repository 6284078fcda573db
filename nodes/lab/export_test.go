package lab

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Internals for the external tests (package lab_test).

const StateFile = stateFile

// ProcessesOf lists the processes that Down would find for a lab in dirs.
func ProcessesOf(dirs ...string) []string {
	var out []string
	for _, p := range labProcesses(dirs, nil) {
		out = append(out, p.Name)
	}
	return out
}

// Recorded reads what a lab's record says it made.
func Recorded(dir string) (links, processes []string, runDir string, err error) {
	st, err := readState(dir)
	if err != nil {
		return nil, nil, "", err
	}
	for _, p := range st.Made.Processes {
		processes = append(processes, p.Name)
	}
	return st.Made.Links, processes, st.Lab.RunDir, nil
}

// KillRecorded SIGKILLs the first recorded process whose name starts with
// prefix.
func KillRecorded(dir, prefix string) error {
	st, err := readState(dir)
	if err != nil {
		return err
	}
	for _, p := range st.Made.Processes {
		if strings.HasPrefix(p.Name, prefix) {
			return p.signal(unix.SIGKILL)
		}
	}
	return nil
}

// FakeLab is the layout of a lab of n machines in dir with made-up host
// keys.
func FakeLab(t *testing.T, dir string, n int) *Lab {
	l := layout(dir, n)
	for i := range l.Machines {
		key, err := writeKey(filepath.Join(t.TempDir(), "key"), "test")
		if err != nil {
			t.Fatal(err)
		}
		l.Machines[i].HostKey = key
	}
	return l
}

// WriteFleet writes the lab's fleet repository from example to path.
func WriteFleet(path string, l *Lab, example fs.FS, when time.Time) (string, error) {
	files, err := readExample(example)
	if err != nil {
		return "", err
	}
	if files, err = fleetFiles(files, l); err != nil {
		return "", err
	}
	h, err := commitFleet(path, files, when)
	return h.String(), err
}

var FindQuickstart = findQuickstart

// HoldHostIdle waits until no lab is up or going up or down on the host,
// and holds it so until release: what a test finds on the host then is
// nobody else's.
func HoldHostIdle(ctx context.Context) (release func(), err error) {
	return lockHost(ctx, filepath.Join(os.TempDir(), "berth-lab-idle-check-does-not-exist"), true, slog.New(slog.DiscardHandler))
}
