package gitsource

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage"
)

// DefaultStatusBranch is the branch status commits go to unless told
// otherwise.
const DefaultStatusBranch = "berth/status"

// Sentinel errors of status and note writing; check them with errors.Is.
var (
	// ErrProtectedBranch: status was asked to go to the branch being
	// watched, which berth never writes.
	ErrProtectedBranch = errors.New("refusing to write status to the watched branch")
	// ErrConflict: a reference changed under a compare-and-swap more
	// often than the retries allowed.
	ErrConflict = errors.New("reference changed concurrently")
)

// Signature names who made a status or notes commit, and when. A zero When
// means now.
type Signature struct {
	Name  string
	Email string
	When  time.Time
}

func (s Signature) object() object.Signature {
	sig := object.Signature{Name: s.Name, Email: s.Email, When: s.When}
	if sig.Name == "" {
		sig.Name = "berth"
	}
	if sig.Email == "" {
		sig.Email = "berth@localhost"
	}
	if sig.When.IsZero() {
		sig.When = time.Now()
	}
	return sig
}

// Status is one status commit to write.
type Status struct {
	// Branch receives the commit; empty is DefaultStatusBranch. A full
	// name ("refs/heads/x") or a short one ("x").
	Branch string
	// Protected is the branch being watched. Writing status to it is
	// refused with ErrProtectedBranch.
	Protected string
	// Files is the whole status tree: slash-separated path → contents.
	// Files of the previous status commit missing here are removed.
	Files map[string][]byte
	// Message of the commit; required.
	Message string
	// Author is the author and committer.
	Author Signature
}

// branchRef normalises a short or full branch name.
func branchRef(b string) plumbing.ReferenceName {
	if strings.HasPrefix(b, "refs/heads/") {
		return plumbing.ReferenceName(b)
	}
	return plumbing.NewBranchReferenceName(b)
}

// Validate checks the status without touching the repository.
func (st Status) Validate() error {
	branch := st.Branch
	if branch == "" {
		branch = DefaultStatusBranch
	}
	ref := branchRef(branch)
	if err := ref.Validate(); err != nil {
		return fmt.Errorf("status branch %q is not a valid branch name", branch)
	}
	if st.Protected != "" && branchRef(st.Protected) == ref {
		return fmt.Errorf("status branch %s: %w", ref.Short(), ErrProtectedBranch)
	}
	if strings.TrimSpace(st.Message) == "" {
		return errors.New("status commit message is empty")
	}
	for p := range st.Files {
		if err := checkTreePath(p); err != nil {
			return fmt.Errorf("status file: %w", err)
		}
	}
	return nil
}

// checkTreePath refuses a path git could not check out or fsck would flag.
func checkTreePath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("invalid path %q", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." || strings.EqualFold(c, ".git") || strings.ContainsRune(c, 0) {
			return fmt.Errorf("invalid path %q", p)
		}
	}
	return nil
}

// casAttempts bounds how often a local compare-and-swap is redone when
// another writer moved the reference in between.
const casAttempts = 10

// WriteStatus commits st.Files as the whole tree of st.Branch, on top of the
// branch's current tip (or as its first commit), and returns the commit's
// hash. Nothing is committed when the tree would not change: it then
// returns the current tip and changed == false.
//
// No worktree is used: blobs and trees are written straight into the object
// store, and only the directories that changed are rewritten. The branch is
// moved with a compare-and-swap on the tip the commit was built on; when
// another writer moved it first, the commit is rebuilt on the new tip (the
// files are the whole status, so nothing is merged) up to a bounded number
// of times before ErrConflict.
func (r *Repo) WriteStatus(ctx context.Context, st Status) (hash string, changed bool, err error) {
	if err := st.Validate(); err != nil {
		return "", false, err
	}
	if st.Branch == "" {
		st.Branch = DefaultStatusBranch
	}
	ref := branchRef(st.Branch)
	want := make(map[string]treeEntry, len(st.Files))
	blobs := make(map[plumbing.Hash][]byte, len(st.Files))
	for p, b := range st.Files {
		h := plumbing.ComputeHash(plumbing.BlobObject, b)
		want[p] = treeEntry{mode: filemode.Regular, hash: h}
		blobs[h] = b
	}
	if err := checkFileDirClash(want); err != nil {
		return "", false, fmt.Errorf("write status: %w", err)
	}
	msg := ensureNewline(st.Message)
	sig := st.Author.object()

	r.mu.Lock()
	defer r.mu.Unlock()
	var h plumbing.Hash
	err = r.withWriteStorage(func(s storage.Storer, _ *git.Repository) error {
		var err error
		h, changed, err = updateWithRetry(ctx, s, ref, func(tip plumbing.Hash, old flatTree) (plumbing.Hash, error) {
			if !tip.IsZero() && sameFiles(old.files, want) {
				return tip, nil
			}
			return commitTree(s, old, want, blobs, tip, msg, sig)
		})
		return err
	})
	if err != nil {
		return "", false, fmt.Errorf("write status to %s: %w", ref.Short(), err)
	}
	return h.String(), changed, nil
}

// updateWithRetry reads ref's tip and its tree, asks build for the commit
// that should follow, and moves ref there with a compare-and-swap, rebuilding
// when another writer won. build returning the tip itself means no change.
func updateWithRetry(ctx context.Context, s storage.Storer, ref plumbing.ReferenceName,
	build func(tip plumbing.Hash, old flatTree) (plumbing.Hash, error)) (plumbing.Hash, bool, error) {
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return plumbing.ZeroHash, false, err
		}
		tip, err := readRef(s, ref)
		if err != nil {
			return plumbing.ZeroHash, false, err
		}
		old := flatTree{files: map[string]treeEntry{}, dirs: map[string]plumbing.Hash{}}
		if !tip.IsZero() {
			c, err := object.GetCommit(s, tip)
			if err != nil {
				return plumbing.ZeroHash, false, fmt.Errorf("read commit %s: %w", tip, err)
			}
			if old, err = readTree(s, c.TreeHash); err != nil {
				return plumbing.ZeroHash, false, err
			}
		}
		next, err := build(tip, old)
		if err != nil {
			return plumbing.ZeroHash, false, err
		}
		if next == tip {
			return tip, false, nil
		}
		err = casRef(s, ref, tip, next)
		if err == nil {
			return next, true, nil
		}
		if !errors.Is(err, errRefMoved) || attempt == casAttempts {
			if errors.Is(err, errRefMoved) {
				return plumbing.ZeroHash, false, fmt.Errorf("%w: %w", ErrConflict, err)
			}
			return plumbing.ZeroHash, false, err
		}
		// Jitter keeps writers that lost together from retrying in step.
		wait := time.Duration(attempt) * 10 * time.Millisecond
		if err := sleepCtx(ctx, wait+rand.N(wait)); err != nil {
			return plumbing.ZeroHash, false, err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func ensureNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

// readRef is the hash ref points to, or the zero hash when it does not
// exist.
func readRef(s storage.Storer, name plumbing.ReferenceName) (plumbing.Hash, error) {
	ref, err := s.Reference(name)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read %s: %w", name, err)
	}
	if ref.Type() != plumbing.HashReference {
		return plumbing.ZeroHash, fmt.Errorf("read %s: a symbolic reference, not a commit", name)
	}
	return ref.Hash(), nil
}

// commitTree writes the tree for want (reusing old's unchanged
// directories), then a commit of it with parent (if not zero).
func commitTree(s storage.Storer, old flatTree, want map[string]treeEntry, blobs map[plumbing.Hash][]byte,
	parent plumbing.Hash, msg string, sig object.Signature) (plumbing.Hash, error) {
	root, err := writeTree(s, old, want, blobs)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	c := &object.Commit{Author: sig, Committer: sig, Message: msg, TreeHash: root}
	if !parent.IsZero() {
		c.ParentHashes = []plumbing.Hash{parent}
	}
	obj := s.NewEncodedObject()
	if err := c.Encode(obj); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encode commit: %w", err)
	}
	h, err := s.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("write commit: %w", err)
	}
	return h, nil
}

// treeEntry is a non-directory entry of a tree.
type treeEntry struct {
	mode filemode.FileMode
	hash plumbing.Hash
}

// flatTree is a tree read whole: every non-directory entry by its slash
// path, and the hash of every directory ("." for the root).
type flatTree struct {
	files map[string]treeEntry
	dirs  map[string]plumbing.Hash
}

// maxTreeDepth bounds the nesting readTree follows.
const maxTreeDepth = 64

// readTree reads the tree root and all its subtrees (not the blobs).
func readTree(s storage.Storer, root plumbing.Hash) (flatTree, error) {
	ft := flatTree{files: map[string]treeEntry{}, dirs: map[string]plumbing.Hash{}}
	var walk func(dir string, h plumbing.Hash, depth int) error
	walk = func(dir string, h plumbing.Hash, depth int) error {
		if depth > maxTreeDepth {
			return fmt.Errorf("tree %s: nested deeper than %d", h, maxTreeDepth)
		}
		ft.dirs[dir] = h
		t, err := object.GetTree(s, h)
		if err != nil {
			return fmt.Errorf("read tree %s: %w", h, err)
		}
		for _, e := range t.Entries {
			p := e.Name
			if dir != "." {
				p = dir + "/" + e.Name
			}
			if e.Mode == filemode.Dir {
				if err := walk(p, e.Hash, depth+1); err != nil {
					return err
				}
				continue
			}
			ft.files[p] = treeEntry{mode: e.Mode, hash: e.Hash}
		}
		return nil
	}
	return ft, walk(".", root, 0)
}

func sameFiles(a, b map[string]treeEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for p, e := range a {
		if b[p] != e {
			return false
		}
	}
	return true
}

// checkFileDirClash refuses a path that is both a file and a directory.
func checkFileDirClash(files map[string]treeEntry) error {
	for p := range files {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := files[d]; ok {
				return fmt.Errorf("%q is both a file and a directory", d)
			}
		}
	}
	return nil
}

// writeTree writes the tree of want and returns its root hash. Directories
// in which nothing changed since old keep their hash and are not written
// again; new blobs come from blobs. Directories left empty disappear.
func writeTree(s storage.Storer, old flatTree, want map[string]treeEntry, blobs map[plumbing.Hash][]byte) (plumbing.Hash, error) {
	dirty := map[string]bool{".": true}
	markDirty := func(p string) {
		for d := path.Dir(p); ; d = path.Dir(d) {
			dirty[d] = true
			if d == "." {
				return
			}
		}
	}
	known := make(map[plumbing.Hash]bool, len(old.files))
	for p, e := range old.files {
		known[e.hash] = true
		if n, ok := want[p]; !ok || n != e {
			markDirty(p)
		}
	}
	type dir struct {
		files []object.TreeEntry
		subs  map[string]bool
	}
	dirs := map[string]*dir{".": {subs: map[string]bool{}}}
	getDir := func(d string) *dir {
		if x := dirs[d]; x != nil {
			return x
		}
		x := &dir{subs: map[string]bool{}}
		dirs[d] = x
		return x
	}
	for p, e := range want {
		if o, ok := old.files[p]; !ok || o != e {
			markDirty(p)
			if !known[e.hash] {
				if b, ok := blobs[e.hash]; ok {
					if err := writeBlob(s, b); err != nil {
						return plumbing.ZeroHash, err
					}
					known[e.hash] = true
				}
			}
		}
		d := path.Dir(p)
		getDir(d).files = append(getDir(d).files, object.TreeEntry{Name: path.Base(p), Mode: e.mode, Hash: e.hash})
		for child := d; child != "."; child = path.Dir(child) {
			getDir(path.Dir(child)).subs[path.Base(child)] = true
		}
	}
	var build func(d string) (plumbing.Hash, error)
	build = func(d string) (plumbing.Hash, error) {
		if h, ok := old.dirs[d]; ok && !dirty[d] {
			return h, nil
		}
		x := dirs[d]
		t := &object.Tree{Entries: append([]object.TreeEntry(nil), x.files...)}
		for name := range x.subs {
			sub := name
			if d != "." {
				sub = d + "/" + name
			}
			h, err := build(sub)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			t.Entries = append(t.Entries, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
		}
		// git orders entries by name, a directory compared as name + "/".
		sort.Slice(t.Entries, func(i, j int) bool { return treeKey(t.Entries[i]) < treeKey(t.Entries[j]) })
		obj := s.NewEncodedObject()
		if err := t.Encode(obj); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("encode tree %s: %w", d, err)
		}
		h, err := s.SetEncodedObject(obj)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("write tree %s: %w", d, err)
		}
		return h, nil
	}
	return build(".")
}

func treeKey(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

func writeBlob(s storage.Storer, b []byte) error {
	obj := s.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	obj.SetSize(int64(len(b)))
	w, err := obj.Writer()
	if err != nil {
		return fmt.Errorf("write blob: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		w.Close()
		return fmt.Errorf("write blob: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write blob: %w", err)
	}
	if _, err := s.SetEncodedObject(obj); err != nil {
		return fmt.Errorf("write blob: %w", err)
	}
	return nil
}
