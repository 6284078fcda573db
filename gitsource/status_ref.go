package gitsource

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// errRefMoved: a compare-and-swap found the reference elsewhere than
// expected, or another writer held its lock.
var errRefMoved = errors.New("reference moved")

// withWriteStorage runs fn with a storer to write objects and references
// into, and a repository over it to resolve revisions with. On disk that is
// a fresh view of the object store that does not cache the object list
// (another process may have written the tip fn builds on), and afterwards
// the Repo's own view is reopened so that it sees what fn wrote. Callers
// hold r.mu.
func (r *Repo) withWriteStorage(fn func(storage.Storer, *git.Repository) error) error {
	return r.withFreshStorage(true, fn)
}

// withFreshStorage is withWriteStorage, reopening the Repo's view after fn
// only if reopen.
func (r *Repo) withFreshStorage(reopen bool, fn func(storage.Storer, *git.Repository) error) error {
	s, ok := r.repo.Storer.(*filesystem.Storage)
	if !ok {
		return fn(r.repo.Storer, r.repo)
	}
	ws := filesystem.NewStorageWithOptions(s.Filesystem(), cache.NewObjectLRUDefault(), filesystem.Options{})
	defer ws.Close()
	repo, err := git.Open(ws, nil)
	if err != nil {
		return fmt.Errorf("open repository: %w", err)
	}
	err = fn(ws, repo)
	if !reopen {
		return err
	}
	fresh, rerr := git.Open(newStorage(s), nil)
	if rerr != nil {
		return errors.Join(err, fmt.Errorf("reopen repository: %w", rerr))
	}
	s.Close()
	r.repo = fresh
	return err
}

// resolveIn resolves rev with Resolve's rules in repo, a fresh view of
// r's storage. Callers hold r.mu.
func (r *Repo) resolveIn(repo *git.Repository, rev string) (*object.Commit, error) {
	saved := r.repo
	r.repo = repo
	defer func() { r.repo = saved }()
	return r.resolveLocked(rev)
}

// casRef moves ref from old (zero: must not exist) to new, failing with
// errRefMoved when it is elsewhere.
//
// On disk this follows git's own locking protocol: create <ref>.lock
// exclusively, check the current value (loose or packed), write the new
// value into the lock file and rename it over the reference. git push,
// receive-pack and update-ref take the same lock, so the swap is atomic
// against them too. go-git's CheckAndSetReference is not: it rewrites the
// reference file in place under flock(2), which git neither takes nor sees
// (a rename by git in between is silently lost), and it cannot require a
// reference to be absent. Like git by default (and go-git for objects),
// nothing is fsynced: status lost in a crash is written again by the next
// pass. Other storers (an in-memory clone) are private
// to this process and use CheckAndSetReference under the Repo's lock.
func casRef(s storage.Storer, ref plumbing.ReferenceName, old, new plumbing.Hash) error {
	fsStore, ok := s.(*filesystem.Storage)
	if !ok {
		cur, err := readRef(s, ref)
		if err != nil {
			return err
		}
		if cur != old {
			return fmt.Errorf("%s is at %s, not %s: %w", ref, cur, old, errRefMoved)
		}
		var oldRef *plumbing.Reference
		if !old.IsZero() {
			oldRef = plumbing.NewHashReference(ref, old)
		}
		if err := s.CheckAndSetReference(plumbing.NewHashReference(ref, new), oldRef); err != nil {
			if errors.Is(err, storage.ErrReferenceHasChanged) {
				return fmt.Errorf("%s: %w", ref, errRefMoved)
			}
			return fmt.Errorf("update %s: %w", ref, err)
		}
		return nil
	}
	return lockedRefUpdate(fsStore, ref, old, new)
}

func lockedRefUpdate(s *filesystem.Storage, ref plumbing.ReferenceName, old, new plumbing.Hash) (err error) {
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("update %s: %w", ref, err)
	}
	fsys := s.Filesystem()
	name := ref.String()
	lock := name + ".lock"
	if err := fsys.MkdirAll(path.Dir(name), 0o755); err != nil {
		return fmt.Errorf("update %s: %w", ref, err)
	}
	f, err := fsys.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("update %s: %s exists (another writer holds it, or one crashed and left it): %w", ref, lock, errRefMoved)
	}
	if err != nil {
		return fmt.Errorf("update %s: %w", ref, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			f.Close()
			if rerr := fsys.Remove(lock); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, fmt.Errorf("remove %s: %w", lock, rerr))
			}
		}
	}()
	cur, err := readRef(s, ref)
	if err != nil {
		return err
	}
	if cur != old {
		return fmt.Errorf("%s is at %s, not %s: %w", ref, shortHash(cur), shortHash(old), errRefMoved)
	}
	if _, err := f.Write([]byte(new.String() + "\n")); err != nil {
		return fmt.Errorf("update %s: %w", ref, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("update %s: %w", ref, err)
	}
	if err := fsys.Rename(lock, name); err != nil {
		return fmt.Errorf("update %s: %w", ref, err)
	}
	renamed = true
	return nil
}

func shortHash(h plumbing.Hash) string {
	if h.IsZero() {
		return "nothing"
	}
	return h.String()[:7]
}
