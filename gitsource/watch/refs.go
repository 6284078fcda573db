package watch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing"
)

// maxLooseRef bounds a loose reference file read (a hash or "ref: name").
const maxLooseRef = 4096

// maxSymrefHops bounds the symbolic references followed.
const maxSymrefHops = 5

// gitDir is the git directory of a bare repository, or of a worktree
// given by its top directory.
func gitDir(dir string) (string, error) {
	if fi, err := os.Stat(filepath.Join(dir, "HEAD")); err == nil && !fi.IsDir() {
		return dir, nil
	}
	dotgit := filepath.Join(dir, ".git")
	if fi, err := os.Stat(dotgit); err == nil && fi.IsDir() {
		return dotgit, nil
	}
	return "", fmt.Errorf("%s is not a git directory (no HEAD) nor a worktree with a .git directory", dir)
}

// branchRef checks a short branch name and returns its full name.
func branchRef(branch string) (string, error) {
	ref := "refs/heads/" + strings.TrimPrefix(branch, "refs/heads/")
	if branch == "" || plumbing.ReferenceName(ref).Validate() != nil {
		return "", fmt.Errorf("%q is not a valid branch name", branch)
	}
	return ref, nil
}

// readRef returns the hash ref (a full, validated name) points to in the
// git directory dir, as git reads it: the loose file if there is one,
// otherwise packed-refs. A missing reference is "" without error.
func readRef(dir, ref string) (string, error) {
	for hop := 0; hop <= maxSymrefHops; hop++ {
		b, err := readLoose(filepath.Join(dir, filepath.FromSlash(ref)))
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR):
			return readPacked(dir, ref)
		default:
			return "", fmt.Errorf("read %s: %w", ref, err)
		}
		s := strings.TrimSpace(string(b))
		if target, ok := strings.CutPrefix(s, "ref: "); ok {
			if !strings.HasPrefix(target, "refs/") || plumbing.ReferenceName(target).Validate() != nil {
				return "", fmt.Errorf("read %s: symbolic reference to %q", ref, target)
			}
			ref = target
			continue
		}
		if !isHash(s) {
			// git writes a lock and renames it, so a reader never sees
			// half a file; go-git rewrites in place, and this may be it.
			return "", fmt.Errorf("read %s: not a hash: %q", ref, truncate(s))
		}
		return s, nil
	}
	return "", fmt.Errorf("read %s: more than %d symbolic references", ref, maxSymrefHops)
}

func readLoose(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxLooseRef))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// readPacked finds ref in dir's packed-refs.
func readPacked(dir, ref string) (string, error) {
	f, err := os.Open(filepath.Join(dir, "packed-refs"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read packed-refs: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	want := []byte(ref)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' || line[0] == '^' {
			continue
		}
		hash, name, ok := bytes.Cut(line, []byte{' '})
		if ok && bytes.Equal(name, want) {
			if !isHash(string(hash)) {
				return "", fmt.Errorf("read packed-refs: %s: not a hash", ref)
			}
			return string(hash), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read packed-refs: %w", err)
	}
	return "", nil
}

// isHash accepts a SHA-1 or SHA-256 object name in lowercase hex.
func isHash(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
