package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"berth.dev/berth/nodes/api"
)

// DefaultMaxImportSize bounds an image archive unless Options say
// otherwise.
const DefaultMaxImportSize = 8 << 30

// importDir holds, under StateDir, the archive being imported and the
// lock that serializes imports.
const importDir = "import"

// ImportImages imports the images of an OCI (or docker save) archive read
// from r, for machines with no registry: pods then use them with
// imagePullPolicy Never or IfNotPresent. The archive is received into a
// file under the state dir (at most Options.MaxImportSize bytes) that is
// removed afterwards. Imports run one at a time, in this agent and any
// other on the same state dir; a call waits its turn until ctx ends.
//
// A malformed, empty or oversized archive is an error wrapping
// api.ErrInvalid with the runtime's message; an unreachable runtime,
// api.ErrUnavailable.
func (m *Manager) ImportImages(ctx context.Context, r io.Reader) ([]api.Image, error) {
	dir := filepath.Join(m.opts.StateDir, importDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("import images: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, "lock"))
	if err != nil {
		return nil, fmt.Errorf("import images: wait for the import in progress: %w", err)
	}
	defer unlock()
	removeStaleArchives(dir)

	path, size, err := m.receiveArchive(dir, r)
	if path != "" {
		defer os.Remove(path)
	}
	if errors.Is(err, api.ErrInvalid) {
		return nil, err // says what is wrong with the archive; the client says what it was doing
	}
	if err != nil {
		return nil, fmt.Errorf("import images: %w", err)
	}
	imgs, err := m.rt.ImportArchive(ctx, path)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, api.ErrUnavailable) {
			return nil, fmt.Errorf("import images: %w", err)
		}
		// The temporary path means nothing to the caller.
		msg := strings.TrimPrefix(err.Error(), "import "+path+": ")
		return nil, fmt.Errorf("%w: %s", api.ErrInvalid, msg)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("%w: the archive holds no image for this machine", api.ErrInvalid)
	}
	out := make([]api.Image, len(imgs))
	refs := make([]string, len(imgs))
	for i, img := range imgs {
		out[i] = api.Image{Ref: img.Ref, ID: img.ID}
		refs[i] = img.Ref
	}
	m.log.Info("imported images", "images", refs, "bytes", size)
	m.event(api.EventNormal, "Imported", "", "", "imported "+strings.Join(refs, ", "))
	return out, nil
}

// receiveArchive copies r into a new file in dir, refusing more than
// MaxImportSize bytes. It returns the file's path (also on failure, when
// the file was made: the caller removes it) and its size.
func (m *Manager) receiveArchive(dir string, r io.Reader) (string, int64, error) {
	f, err := os.CreateTemp(dir, "archive-*.tar")
	if err != nil {
		return "", 0, err
	}
	max := m.opts.MaxImportSize
	n, err := io.CopyBuffer(storeWriter{f}, io.LimitReader(r, max+1), make([]byte, 1<<20))
	if cerr := f.Close(); err == nil && cerr != nil {
		return f.Name(), n, cerr
	}
	var werr *writeError
	switch {
	case errors.As(err, &werr):
		return f.Name(), n, fmt.Errorf("store the archive: %w", werr.err)
	case err != nil:
		return f.Name(), n, fmt.Errorf("%w: read the archive after %d bytes: %v", api.ErrInvalid, n, err)
	case n > max:
		return f.Name(), n, fmt.Errorf("%w: archive larger than %s (the agent's limit)", api.ErrInvalid, formatBytes(max))
	case n == 0:
		return f.Name(), n, fmt.Errorf("%w: the archive is empty", api.ErrInvalid)
	}
	return f.Name(), n, nil
}

// storeWriter tells its write errors (the machine's disk) from the read
// errors of io.Copy (the caller's archive).
type storeWriter struct{ w io.Writer }

type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func (s storeWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

// removeStaleArchives removes what an import that did not finish (the
// agent was killed) left in dir. The caller holds the import lock.
func removeStaleArchives(dir string) {
	stale, _ := filepath.Glob(filepath.Join(dir, "archive-*.tar"))
	for _, p := range stale {
		os.Remove(p)
	}
}

// lockFile takes an exclusive flock on path (made if missing), waiting
// until it is free or ctx ends. Closing the file, which unlock does,
// releases it; so does the process's death.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
		return func() { f.Close() }, nil
	}
	got := make(chan error, 1)
	go func() { got <- unix.Flock(int(f.Fd()), unix.LOCK_EX) }()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// The goroutine gets the lock once the holder is done; let go
		// of it then.
		go func() { <-got; f.Close() }()
		return nil, ctx.Err()
	}
}

// formatBytes writes n in the largest binary unit that divides it.
func formatBytes(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
