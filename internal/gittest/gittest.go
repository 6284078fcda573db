// Package gittest builds real git repositories in temporary directories for
// tests across berth. It uses go-git only (no git binary), writes objects with
// plumbing so that a commit of 10,000 files stays fast, and stamps commits
// with a fixed author and increasing times so golden outputs are stable.
package gittest

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/index"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Fixed identity and clock of every commit and annotated tag the builder makes.
const (
	AuthorName  = "Berth Test"
	AuthorEmail = "test@berth.dev"
)

// Epoch is the time of a repository's first commit; each later commit and
// annotated tag is one minute after the previous one.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// DefaultBranch is the branch HEAD points to in a new repository.
const DefaultBranch = "main"

// packThreshold is the number of new objects from which a commit writes one
// packfile instead of loose objects.
const packThreshold = 128

// Repo is a git repository on disk under test. Its methods fail the test on
// error, so they return plain values.
type Repo struct {
	tb   testing.TB
	path string
	bare bool
	repo *git.Repository

	clock   int
	staged  []change
	state   map[string]entry // tree of stateOf, by path
	stateOf plumbing.Hash
}

type entry struct {
	mode filemode.FileMode
	hash plumbing.Hash
}

type change struct {
	path   string
	remove bool
	e      entry
}

// New creates an empty repository with a worktree in a fresh t.TempDir().
// Commits update the worktree files and the index as well as the branch, so
// the directory looks like a clean checkout.
func New(tb testing.TB) *Repo {
	tb.Helper()
	return initRepo(tb, false)
}

// NewBare creates an empty bare repository in a fresh t.TempDir().
func NewBare(tb testing.TB) *Repo {
	tb.Helper()
	return initRepo(tb, true)
}

func initRepo(tb testing.TB, bare bool) *Repo {
	tb.Helper()
	dir := tb.TempDir()
	if bare {
		dir = filepath.Join(dir, "repo.git")
	} else {
		dir = filepath.Join(dir, "repo")
	}
	r, err := git.PlainInitWithOptions(dir, &git.PlainInitOptions{
		Bare:        bare,
		InitOptions: git.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName(DefaultBranch)},
	})
	if err != nil {
		tb.Fatalf("gittest: init %s: %v", dir, err)
	}
	return &Repo{tb: tb, path: dir, bare: bare, repo: r}
}

// Path is the repository's directory: the worktree for New, the git
// directory for NewBare.
func (r *Repo) Path() string { return r.path }

// URL is the file:// URL of the repository, for clone tests.
func (r *Repo) URL() string { return "file://" + filepath.ToSlash(r.path) }

// Repository is the underlying go-git repository, for assertions the builder
// does not cover.
func (r *Repo) Repository() *git.Repository { return r.repo }

// Head returns the hash of the commit HEAD points to, or "" in an empty
// repository.
func (r *Repo) Head() string {
	r.tb.Helper()
	h := r.head()
	if h.IsZero() {
		return ""
	}
	return h.String()
}

// Commit writes files (path → content; an empty content is an empty file,
// not a deletion) on top of HEAD's tree, together with any changes staged by
// Remove, Symlink and Gitlink, and commits the result on the branch HEAD
// points to. It returns the new commit's hash. Staged changes are applied
// before files. A nil or empty files map with nothing staged makes a commit
// with an unchanged tree.
func (r *Repo) Commit(files map[string]string, msg string) string {
	r.tb.Helper()
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return r.CommitMany(func(add func(path, content string)) {
		for _, p := range paths {
			add(p, files[p])
		}
	}, msg)
}

// CommitMany is Commit for large trees: fill calls add once per file, and
// the objects are written as a single packfile when there are many of them.
func (r *Repo) CommitMany(fill func(add func(path, content string)), msg string) string {
	r.tb.Helper()
	parent := r.head()
	state := r.loadState(parent)
	old := cloneState(state)

	objs := newObjectSet(r.tb)
	for _, c := range r.staged {
		if c.remove {
			removePath(state, c.path)
			continue
		}
		state[c.path] = c.e
	}
	r.staged = nil
	fill(func(p, content string) {
		r.tb.Helper()
		r.checkPath(p)
		state[p] = entry{mode: filemode.Regular, hash: objs.addBlob([]byte(content))}
	})

	root := r.buildTree(objs, state)
	r.clock++
	when := Epoch.Add(time.Duration(r.clock-1) * time.Minute)
	sig := object.Signature{Name: AuthorName, Email: AuthorEmail, When: when}
	c := &object.Commit{Author: sig, Committer: sig, Message: ensureNewline(msg), TreeHash: root}
	if !parent.IsZero() {
		c.ParentHashes = []plumbing.Hash{parent}
	}
	ch := objs.addObject(c)
	r.writeObjects(objs)

	ref := r.headTarget()
	if err := r.repo.Storer.SetReference(plumbing.NewHashReference(ref, ch)); err != nil {
		r.tb.Fatalf("gittest: update %s: %v", ref, err)
	}
	r.state, r.stateOf = state, ch
	if !r.bare {
		r.syncWorktree(old, state)
	}
	return ch.String()
}

// Remove stages the deletion of paths (files, symlinks or whole directories)
// for the next Commit or CommitMany.
func (r *Repo) Remove(paths ...string) {
	r.tb.Helper()
	for _, p := range paths {
		r.checkPath(p)
		r.staged = append(r.staged, change{path: p, remove: true})
	}
}

// Symlink stages a symbolic link at path pointing to target (stored verbatim,
// which may be absolute or leave the tree) for the next Commit or CommitMany.
func (r *Repo) Symlink(p, target string) {
	r.tb.Helper()
	r.checkPath(p)
	h := r.writeBlob([]byte(target))
	r.staged = append(r.staged, change{path: p, e: entry{mode: filemode.Symlink, hash: h}})
}

// Gitlink stages a submodule entry at path recording commit (40 hex digits,
// need not exist in this repository) for the next Commit or CommitMany.
func (r *Repo) Gitlink(p, commit string) {
	r.tb.Helper()
	r.checkPath(p)
	h := plumbing.NewHash(commit)
	if h.IsZero() || h.String() != strings.ToLower(commit) {
		r.tb.Fatalf("gittest: gitlink %s: %q is not a commit hash", p, commit)
	}
	r.staged = append(r.staged, change{path: p, e: entry{mode: filemode.Submodule, hash: h}})
}

// Tag creates a lightweight tag at HEAD.
func (r *Repo) Tag(name string) {
	r.tb.Helper()
	ref := plumbing.NewTagReferenceName(name)
	r.setRef(ref, r.mustHead())
}

// AnnotatedTag creates an annotated tag object at HEAD with message msg.
func (r *Repo) AnnotatedTag(name, msg string) {
	r.tb.Helper()
	head := r.mustHead()
	r.clock++
	sig := &object.Signature{Name: AuthorName, Email: AuthorEmail, When: Epoch.Add(time.Duration(r.clock-1) * time.Minute)}
	if _, err := r.repo.CreateTag(name, head, &git.CreateTagOptions{Tagger: sig, Message: msg}); err != nil {
		r.tb.Fatalf("gittest: tag %s: %v", name, err)
	}
}

// Branch creates (or moves) branch name to HEAD without switching to it.
func (r *Repo) Branch(name string) {
	r.tb.Helper()
	r.setRef(plumbing.NewBranchReferenceName(name), r.mustHead())
}

// Checkout points HEAD at branch name, creating the branch at the current
// HEAD if it does not exist, so that later commits go there. In a worktree
// repository the files follow.
func (r *Repo) Checkout(name string) {
	r.tb.Helper()
	ref := plumbing.NewBranchReferenceName(name)
	if err := ref.Validate(); err != nil {
		r.tb.Fatalf("gittest: checkout %q: %v", name, err)
	}
	old := r.head()
	oldState := cloneState(r.loadState(old))
	if _, err := r.repo.Storer.Reference(ref); errors.Is(err, plumbing.ErrReferenceNotFound) {
		if !old.IsZero() {
			r.setRef(ref, old)
		}
	} else if err != nil {
		r.tb.Fatalf("gittest: checkout %s: %v", name, err)
	}
	if err := r.repo.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, ref)); err != nil {
		r.tb.Fatalf("gittest: checkout %s: %v", name, err)
	}
	if !r.bare {
		r.syncWorktree(oldState, r.loadState(r.head()))
	}
}

func (r *Repo) setRef(ref plumbing.ReferenceName, h plumbing.Hash) {
	r.tb.Helper()
	if err := ref.Validate(); err != nil {
		r.tb.Fatalf("gittest: reference %q: %v", ref, err)
	}
	if err := r.repo.Storer.SetReference(plumbing.NewHashReference(ref, h)); err != nil {
		r.tb.Fatalf("gittest: set %s: %v", ref, err)
	}
}

func (r *Repo) checkPath(p string) {
	r.tb.Helper()
	if !fs.ValidPath(p) || p == "." || p == ".git" || strings.HasPrefix(p, ".git/") {
		r.tb.Fatalf("gittest: invalid path %q", p)
	}
}

// headTarget is the branch HEAD points to.
func (r *Repo) headTarget() plumbing.ReferenceName {
	r.tb.Helper()
	ref, err := r.repo.Storer.Reference(plumbing.HEAD)
	if err != nil {
		r.tb.Fatalf("gittest: read HEAD: %v", err)
	}
	if ref.Type() != plumbing.SymbolicReference {
		r.tb.Fatalf("gittest: HEAD is detached")
	}
	return ref.Target()
}

// head is the commit HEAD resolves to, or the zero hash on an unborn branch.
func (r *Repo) head() plumbing.Hash {
	r.tb.Helper()
	ref, err := r.repo.Storer.Reference(r.headTarget())
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash
	}
	if err != nil {
		r.tb.Fatalf("gittest: resolve HEAD: %v", err)
	}
	return ref.Hash()
}

func (r *Repo) mustHead() plumbing.Hash {
	r.tb.Helper()
	h := r.head()
	if h.IsZero() {
		r.tb.Fatalf("gittest: no commit yet")
	}
	return h
}

// loadState returns the path → entry map of commit c's tree. The returned
// map may be the cached one; callers that keep the old value clone it.
func (r *Repo) loadState(c plumbing.Hash) map[string]entry {
	r.tb.Helper()
	if c == r.stateOf && r.state != nil {
		return r.state
	}
	state := map[string]entry{}
	if !c.IsZero() {
		commit, err := r.repo.CommitObject(c)
		if err != nil {
			r.tb.Fatalf("gittest: read commit %s: %v", c, err)
		}
		tree, err := commit.Tree()
		if err != nil {
			r.tb.Fatalf("gittest: read tree of %s: %v", c, err)
		}
		if err := r.walk(tree, "", state); err != nil {
			r.tb.Fatalf("gittest: walk tree of %s: %v", c, err)
		}
	}
	r.state, r.stateOf = state, c
	return state
}

func (r *Repo) walk(t *object.Tree, prefix string, state map[string]entry) error {
	for _, e := range t.Entries {
		p := prefix + e.Name
		if e.Mode == filemode.Dir {
			sub, err := object.GetTree(r.repo.Storer, e.Hash)
			if err != nil {
				return err
			}
			if err := r.walk(sub, p+"/", state); err != nil {
				return err
			}
			continue
		}
		state[p] = entry{mode: e.Mode, hash: e.Hash}
	}
	return nil
}

func cloneState(m map[string]entry) map[string]entry {
	out := make(map[string]entry, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func removePath(state map[string]entry, p string) {
	delete(state, p)
	prefix := p + "/"
	for k := range state {
		if strings.HasPrefix(k, prefix) {
			delete(state, k)
		}
	}
}

func ensureNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

// objectSet collects the objects of one commit before they are written.
type objectSet struct {
	tb     testing.TB
	mem    *memory.Storage
	hashes []plumbing.Hash
	seen   map[plumbing.Hash]bool
}

func newObjectSet(tb testing.TB) *objectSet {
	return &objectSet{tb: tb, mem: memory.NewStorage(), seen: map[plumbing.Hash]bool{}}
}

func (o *objectSet) addBlob(content []byte) plumbing.Hash {
	obj := o.mem.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	obj.SetSize(int64(len(content)))
	w, _ := obj.Writer()
	_, _ = w.Write(content) // a MemoryObject's writer cannot fail
	_ = w.Close()
	return o.put(obj)
}

func (o *objectSet) addObject(v interface {
	Encode(plumbing.EncodedObject) error
}) plumbing.Hash {
	o.tb.Helper()
	obj := o.mem.NewEncodedObject()
	if err := v.Encode(obj); err != nil {
		o.tb.Fatalf("gittest: encode object: %v", err)
	}
	return o.put(obj)
}

func (o *objectSet) put(obj plumbing.EncodedObject) plumbing.Hash {
	h := obj.Hash()
	if o.seen[h] {
		return h
	}
	o.seen[h] = true
	_, _ = o.mem.SetEncodedObject(obj)
	o.hashes = append(o.hashes, h)
	return h
}

// writeObjects stores the collected objects, as loose objects or, when
// there are many, as one packfile. Objects the repository already has are
// written again, which is harmless and cheaper than asking for each.
func (r *Repo) writeObjects(o *objectSet) {
	r.tb.Helper()
	s := r.repo.Storer
	if pw, ok := s.(storer.PackfileWriter); ok && len(o.hashes) >= packThreshold {
		w, err := pw.PackfileWriter()
		if err != nil {
			r.tb.Fatalf("gittest: open packfile writer: %v", err)
		}
		bw := bufio.NewWriterSize(w, 1<<16)
		if _, err := packfile.NewEncoder(bw, o.mem, false).Encode(o.hashes, 0); err != nil {
			_ = w.Close()
			r.tb.Fatalf("gittest: write packfile: %v", err)
		}
		if err := bw.Flush(); err != nil {
			_ = w.Close()
			r.tb.Fatalf("gittest: write packfile: %v", err)
		}
		if err := w.Close(); err != nil {
			r.tb.Fatalf("gittest: write packfile: %v", err)
		}
		return
	}
	for _, h := range o.hashes {
		obj, err := o.mem.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			r.tb.Fatalf("gittest: object %s: %v", h, err)
		}
		if _, err := s.SetEncodedObject(obj); err != nil {
			r.tb.Fatalf("gittest: write object %s: %v", h, err)
		}
	}
}

func (r *Repo) writeBlob(content []byte) plumbing.Hash {
	r.tb.Helper()
	o := newObjectSet(r.tb)
	h := o.addBlob(content)
	r.writeObjects(o)
	return h
}

// buildTree writes the tree objects for state into o and returns the root
// tree's hash.
func (r *Repo) buildTree(o *objectSet, state map[string]entry) plumbing.Hash {
	r.tb.Helper()
	type dir struct {
		files map[string]entry
		dirs  map[string]*dir
	}
	newDir := func() *dir { return &dir{files: map[string]entry{}, dirs: map[string]*dir{}} }
	root := newDir()
	for p, e := range state {
		d := root
		parts := strings.Split(p, "/")
		for i, name := range parts[:len(parts)-1] {
			if _, ok := d.files[name]; ok {
				r.tb.Fatalf("gittest: %q is both a file and a directory; Remove it first", strings.Join(parts[:i+1], "/"))
			}
			sub := d.dirs[name]
			if sub == nil {
				sub = newDir()
				d.dirs[name] = sub
			}
			d = sub
		}
		name := parts[len(parts)-1]
		if _, ok := d.dirs[name]; ok {
			r.tb.Fatalf("gittest: %q is both a file and a directory; Remove it first", p)
		}
		d.files[name] = e
	}
	var build func(d *dir) plumbing.Hash
	build = func(d *dir) plumbing.Hash {
		t := &object.Tree{}
		for name, e := range d.files {
			t.Entries = append(t.Entries, object.TreeEntry{Name: name, Mode: e.mode, Hash: e.hash})
		}
		for name, sub := range d.dirs {
			t.Entries = append(t.Entries, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: build(sub)})
		}
		// git orders entries by name, comparing a directory as name + "/".
		sort.Slice(t.Entries, func(i, j int) bool { return treeKey(t.Entries[i]) < treeKey(t.Entries[j]) })
		return o.addObject(t)
	}
	return build(root)
}

func treeKey(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

// syncWorktree makes the worktree files and the index match state, touching
// only the paths that differ from old.
func (r *Repo) syncWorktree(old, state map[string]entry) {
	r.tb.Helper()
	for p, e := range old {
		if n, ok := state[p]; ok && n == e {
			continue
		}
		full := filepath.Join(r.path, filepath.FromSlash(p))
		if err := os.RemoveAll(full); err != nil {
			r.tb.Fatalf("gittest: remove %s: %v", full, err)
		}
		if _, ok := state[p]; !ok {
			r.pruneEmptyDirs(path.Dir(p))
		}
	}
	paths := make([]string, 0, len(state))
	for p := range state {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	idx := &index.Index{Version: 2}
	for _, p := range paths {
		e := state[p]
		var size uint32
		if o, ok := old[p]; !ok || o != e {
			size = r.writeWorktreeFile(p, e)
		} else if e.mode != filemode.Submodule {
			fi, err := os.Lstat(filepath.Join(r.path, filepath.FromSlash(p)))
			if err != nil {
				r.tb.Fatalf("gittest: stat %s: %v", p, err)
			}
			size = uint32(fi.Size())
		}
		idx.Entries = append(idx.Entries, &index.Entry{Name: p, Hash: e.hash, Mode: e.mode, Size: size})
	}
	if err := r.repo.Storer.SetIndex(idx); err != nil {
		r.tb.Fatalf("gittest: write index: %v", err)
	}
}

func (r *Repo) writeWorktreeFile(p string, e entry) uint32 {
	r.tb.Helper()
	full := filepath.Join(r.path, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		r.tb.Fatalf("gittest: %v", err)
	}
	if e.mode == filemode.Submodule {
		if err := os.MkdirAll(full, 0o755); err != nil {
			r.tb.Fatalf("gittest: %v", err)
		}
		return 0
	}
	blob, err := r.repo.BlobObject(e.hash)
	if err != nil {
		r.tb.Fatalf("gittest: read blob of %s: %v", p, err)
	}
	rd, err := blob.Reader()
	if err != nil {
		r.tb.Fatalf("gittest: read blob of %s: %v", p, err)
	}
	defer rd.Close()
	buf := make([]byte, blob.Size)
	if _, err := io.ReadFull(rd, buf); err != nil {
		r.tb.Fatalf("gittest: read blob of %s: %v", p, err)
	}
	if e.mode == filemode.Symlink {
		if err := os.Symlink(string(buf), full); err != nil {
			r.tb.Fatalf("gittest: %v", err)
		}
		return uint32(len(buf))
	}
	perm := os.FileMode(0o644)
	if e.mode == filemode.Executable {
		perm = 0o755
	}
	if err := os.WriteFile(full, buf, perm); err != nil {
		r.tb.Fatalf("gittest: %v", err)
	}
	return uint32(len(buf))
}

// pruneEmptyDirs removes dir and its ancestors while they are empty.
func (r *Repo) pruneEmptyDirs(dir string) {
	for dir != "." && dir != "/" {
		if err := os.Remove(filepath.Join(r.path, filepath.FromSlash(dir))); err != nil {
			return
		}
		dir = path.Dir(dir)
	}
}
