package gitsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// Snapshot is the tree of one commit.
type Snapshot struct {
	Commit Commit
	// FS reads the commit's tree straight from the object store. It
	// implements fs.ReadDirFS, fs.ReadFileFS, fs.StatFS, fs.ReadLinkFS and
	// fs.SubFS, and is safe for concurrent use. See Repo.Snapshot.
	FS fs.FS
}

// ObjectInfo is what the fs.FileInfo of a Snapshot FS returns from Sys: the
// git object behind the entry (a blob, a tree, or for a submodule the commit
// it records). Equal hashes mean equal contents, across revisions.
type ObjectInfo struct {
	Hash string
}

// maxSymlinks bounds the symbolic links followed to resolve one name, as
// Linux's ELOOP limit does.
const maxSymlinks = 40

// maxLinkTarget bounds the size of a symbolic link's target (PATH_MAX).
const maxLinkTarget = 4096

var (
	errTooManyLinks = errors.New("too many levels of symbolic links")
	errSubmodule    = errors.New("submodule, not followed")
	errIsDir        = errors.New("is a directory")
)

// outsideError reports a symbolic link whose target leaves the repository.
type outsideError struct{ link string }

func (e *outsideError) Error() string {
	return fmt.Sprintf("symlink %q points outside the repository", e.link)
}

// Is makes the error match fs.ErrPermission.
func (e *outsideError) Is(target error) bool { return target == fs.ErrPermission }

// Snapshot resolves rev and returns a read-only view of the commit's tree
// (limited to Subdir for a repository opened inside a worktree).
//
// Nothing outside the object store is read: there is no worktree and no
// checkout. Stat, Lstat and DirEntry.Info report blob sizes without reading
// blob contents, so callers can refuse huge files first. ReadDir reports a
// symbolic link as fs.ModeSymlink; Open, Stat and ReadFile follow it (up to
// 40 links) when it stays inside the tree, and fail with an error matching
// fs.ErrPermission when it is absolute or climbs above the repository root.
// Submodules are listed as fs.ModeIrregular and cannot be opened.
func (r *Repo) Snapshot(ctx context.Context, rev string) (*Snapshot, error) {
	return r.snapshot(ctx, rev, r.Subdir())
}

// RootSnapshot is Snapshot of the whole tree, whatever Subdir is: the
// status branch is written at the repository's root even when the fleet
// lives in a sub-folder.
func (r *Repo) RootSnapshot(ctx context.Context, rev string) (*Snapshot, error) {
	return r.snapshot(ctx, rev, ".")
}

func (r *Repo) snapshot(ctx context.Context, rev, sub string) (*Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	c, err := r.resolveLocked(rev)
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	commit := toCommit(c)
	t := &tree{
		mu:      &r.mu,
		s:       r.repo.Storer,
		rootID:  c.TreeHash,
		modTime: commit.Time,
		dirs:    map[string]*treeDir{},
	}
	fsys := &treeFS{t: t, base: "."}
	if sub != "." {
		s, err := fsys.Sub(sub)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", commit.Short, err)
		}
		fsys = s.(*treeFS)
	}
	return &Snapshot{Commit: commit, FS: fsys}, nil
}

// tree is the decoded state shared by a snapshot's FS and its sub-FSes.
type tree struct {
	mu      *sync.Mutex // the Repo's: go-git's storage is not safe for concurrent use
	s       storer.EncodedObjectStorer
	rootID  plumbing.Hash
	modTime time.Time
	dirs    map[string]*treeDir // by slash-separated path from the root, "." for the root
}

// treeDir is one decoded tree object.
type treeDir struct {
	path    string
	hash    plumbing.Hash
	entries []object.TreeEntry // sorted by name, as fs.ReadDir wants
	byName  map[string]int
	sizes   []int64 // blob sizes, -1 until asked
}

func (d *treeDir) find(name string) (object.TreeEntry, int, bool) {
	i, ok := d.byName[name]
	if !ok {
		return object.TreeEntry{}, 0, false
	}
	return d.entries[i], i, true
}

// node is what a path resolves to.
type node struct {
	path string // real path in the tree, "." for the root
	mode filemode.FileMode
	hash plumbing.Hash
	dir  *treeDir // for directories
	idx  int      // index in parent, for the size cache
	par  *treeDir // parent, nil for the root
}

// loadDir returns the decoded tree hash found at path p. Callers hold t.mu.
func (t *tree) loadDir(p string, hash plumbing.Hash) (*treeDir, error) {
	if d, ok := t.dirs[p]; ok && d.hash == hash {
		return d, nil
	}
	obj, err := t.s.EncodedObject(plumbing.TreeObject, hash)
	if err != nil {
		return nil, fmt.Errorf("read tree %s: %w", hash, err)
	}
	var ot object.Tree
	if err := ot.Decode(obj); err != nil {
		return nil, fmt.Errorf("decode tree %s: %w", hash, err)
	}
	d := &treeDir{path: p, hash: hash, byName: make(map[string]int, len(ot.Entries))}
	for _, e := range ot.Entries {
		// Names a path cannot address are dropped, never listed.
		if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00") {
			continue
		}
		if _, dup := d.byName[e.Name]; dup {
			continue
		}
		d.byName[e.Name] = -1
		d.entries = append(d.entries, e)
	}
	sort.Slice(d.entries, func(i, j int) bool { return d.entries[i].Name < d.entries[j].Name })
	for i, e := range d.entries {
		d.byName[e.Name] = i
	}
	d.sizes = make([]int64, len(d.entries))
	for i := range d.sizes {
		d.sizes[i] = -1
	}
	t.dirs[p] = d
	return d, nil
}

// resolve finds the node at the real tree path p, following symbolic links
// (the last element's only if follow). Callers hold t.mu.
func (t *tree) resolve(p string, follow bool) (node, error) {
	for hops := 0; ; hops++ {
		n, link, rest, err := t.walk(p, follow)
		if err != nil || link == nil {
			return n, err
		}
		if hops == maxSymlinks {
			return node{}, errTooManyLinks
		}
		target, err := t.readLink(link.hash)
		if err != nil {
			return node{}, fmt.Errorf("symlink %q: %w", link.path, err)
		}
		if target == "" || path.IsAbs(target) {
			return node{}, &outsideError{link: link.path}
		}
		next := path.Join(path.Dir(link.path), target)
		if next == ".." || strings.HasPrefix(next, "../") {
			return node{}, &outsideError{link: link.path}
		}
		if rest != "" {
			next = path.Join(next, rest)
		}
		p = next
	}
}

// walk descends the tree along p. When it meets a symbolic link it must
// follow, it returns the link's node and the rest of p after it.
func (t *tree) walk(p string, follow bool) (n node, link *node, rest string, err error) {
	root, err := t.loadDir(".", t.rootID)
	if err != nil {
		return node{}, nil, "", err
	}
	if p == "." {
		return node{path: ".", mode: filemode.Dir, hash: root.hash, dir: root}, nil, "", nil
	}
	d, cur := root, "."
	comps := strings.Split(p, "/")
	// A cached parent is a real directory: start from it.
	if parent := path.Dir(p); parent != "." {
		if pd, ok := t.dirs[parent]; ok {
			d, cur, comps = pd, parent, comps[len(comps)-1:]
		}
	}
	for i, name := range comps {
		e, idx, ok := d.find(name)
		if !ok {
			return node{}, nil, "", fs.ErrNotExist
		}
		ep := name
		if cur != "." {
			ep = cur + "/" + name
		}
		last := i == len(comps)-1
		n := node{path: ep, mode: e.Mode, hash: e.Hash, idx: idx, par: d}
		switch e.Mode {
		case filemode.Dir:
			sub, err := t.loadDir(ep, e.Hash)
			if err != nil {
				return node{}, nil, "", err
			}
			if last {
				n.dir = sub
				return n, nil, "", nil
			}
			d, cur = sub, ep
		case filemode.Symlink:
			if last && !follow {
				return n, nil, "", nil
			}
			return node{}, &n, strings.Join(comps[i+1:], "/"), nil
		default:
			if !last {
				// A file used as a directory: nothing there.
				return node{}, nil, "", fs.ErrNotExist
			}
			return n, nil, "", nil
		}
	}
	return node{}, nil, "", fs.ErrNotExist // unreachable: comps is never empty
}

// readLink reads a symbolic link's target. Callers hold t.mu.
func (t *tree) readLink(h plumbing.Hash) (string, error) {
	size, err := t.s.EncodedObjectSize(h)
	if err != nil {
		return "", fmt.Errorf("read link target %s: %w", h, err)
	}
	if size > maxLinkTarget {
		return "", fmt.Errorf("link target of %d bytes is longer than %d", size, maxLinkTarget)
	}
	b, err := t.readBlob(h)
	return string(b), err
}

// readBlob reads a whole blob. Callers hold t.mu.
func (t *tree) readBlob(h plumbing.Hash) ([]byte, error) {
	obj, err := t.s.EncodedObject(plumbing.BlobObject, h)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	rd, err := obj.Reader()
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	defer rd.Close()
	buf := make([]byte, obj.Size())
	if _, err := io.ReadFull(rd, buf); err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	return buf, nil
}

// size returns the size of the blob at n without reading it. Callers hold
// t.mu.
func (t *tree) size(n node) (int64, error) {
	switch n.mode {
	case filemode.Dir, filemode.Submodule:
		return 0, nil
	}
	if n.par != nil && n.par.sizes[n.idx] >= 0 {
		return n.par.sizes[n.idx], nil
	}
	sz, err := t.s.EncodedObjectSize(n.hash)
	if err != nil {
		return 0, fmt.Errorf("size of blob %s: %w", n.hash, err)
	}
	if n.par != nil {
		n.par.sizes[n.idx] = sz
	}
	return sz, nil
}

func (t *tree) info(name string, n node) (*fileInfo, error) {
	sz, err := t.size(n)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: name, size: sz, mode: fsMode(n.mode), modTime: t.modTime, hash: n.hash}, nil
}

func fsMode(m filemode.FileMode) fs.FileMode {
	switch m {
	case filemode.Dir:
		return fs.ModeDir | 0o755
	case filemode.Symlink:
		return fs.ModeSymlink | 0o777
	case filemode.Executable:
		return 0o755
	case filemode.Regular, filemode.Deprecated:
		return 0o644
	default: // submodule, or anything a future git invents
		return fs.ModeIrregular
	}
}

// treeFS is a Snapshot's file system, rooted at base inside the tree.
type treeFS struct {
	t    *tree
	base string // real path of the FS root in the tree, "." for the repository root
}

var (
	_ fs.ReadDirFS  = (*treeFS)(nil)
	_ fs.ReadFileFS = (*treeFS)(nil)
	_ fs.StatFS     = (*treeFS)(nil)
	_ fs.ReadLinkFS = (*treeFS)(nil)
	_ fs.SubFS      = (*treeFS)(nil)
)

// lookup resolves name for op, returning errors as *fs.PathError.
func (f *treeFS) lookup(op, name string, follow bool) (node, error) {
	if !fs.ValidPath(name) {
		return node{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	p := name
	if f.base != "." {
		p = path.Join(f.base, name)
	}
	f.t.mu.Lock()
	n, err := f.t.resolve(p, follow)
	f.t.mu.Unlock()
	if err != nil {
		return node{}, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return n, nil
}

// Open opens the named file or directory, following symbolic links.
func (f *treeFS) Open(name string) (fs.File, error) {
	n, err := f.lookup("open", name, true)
	if err != nil {
		return nil, err
	}
	if n.mode == filemode.Submodule {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errSubmodule}
	}
	if n.mode == filemode.Dir {
		return &dirFile{f: f, name: name, n: n}, nil
	}
	return &blobFile{f: f, name: name, n: n}, nil
}

// Stat describes the named file, following symbolic links, without reading
// its contents.
func (f *treeFS) Stat(name string) (fs.FileInfo, error) {
	return f.stat("stat", name, true)
}

// Lstat describes the named file without following a final symbolic link.
func (f *treeFS) Lstat(name string) (fs.FileInfo, error) {
	return f.stat("lstat", name, false)
}

func (f *treeFS) stat(op, name string, follow bool) (fs.FileInfo, error) {
	n, err := f.lookup(op, name, follow)
	if err != nil {
		return nil, err
	}
	f.t.mu.Lock()
	fi, err := f.t.info(path.Base(name), n)
	f.t.mu.Unlock()
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return fi, nil
}

// ReadLink returns the target of the named symbolic link as stored, which
// may point anywhere; nothing is resolved.
func (f *treeFS) ReadLink(name string) (string, error) {
	n, err := f.lookup("readlink", name, false)
	if err != nil {
		return "", err
	}
	if n.mode != filemode.Symlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	f.t.mu.Lock()
	target, err := f.t.readLink(n.hash)
	f.t.mu.Unlock()
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return target, nil
}

// ReadFile reads the named file, following symbolic links. The blob is read
// once, into a slice the caller owns.
func (f *treeFS) ReadFile(name string) ([]byte, error) {
	n, err := f.lookup("read", name, true)
	if err != nil {
		return nil, err
	}
	switch n.mode {
	case filemode.Dir:
		return nil, &fs.PathError{Op: "read", Path: name, Err: errIsDir}
	case filemode.Submodule:
		return nil, &fs.PathError{Op: "read", Path: name, Err: errSubmodule}
	}
	f.t.mu.Lock()
	b, err := f.t.readBlob(n.hash)
	f.t.mu.Unlock()
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	return b, nil
}

// ReadDir lists the named directory, sorted by name, following symbolic
// links to reach it.
func (f *treeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := f.lookup("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if n.mode != filemode.Dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	return f.entries(n.dir, 0, len(n.dir.entries)), nil
}

func (f *treeFS) entries(d *treeDir, from, to int) []fs.DirEntry {
	out := make([]fs.DirEntry, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, &dirEntry{t: f.t, d: d, i: i})
	}
	return out
}

// Sub returns the file system rooted at dir, following symbolic links to
// reach it; links inside may still reach the rest of the repository.
func (f *treeFS) Sub(dir string) (fs.FS, error) {
	n, err := f.lookup("sub", dir, true)
	if err != nil {
		return nil, err
	}
	if n.mode != filemode.Dir {
		return nil, &fs.PathError{Op: "sub", Path: dir, Err: errors.New("not a directory")}
	}
	return &treeFS{t: f.t, base: n.path}, nil
}

// dirEntry is one entry of a ReadDir listing; Info reads the blob size lazily.
type dirEntry struct {
	t *tree
	d *treeDir
	i int
}

func (e *dirEntry) Name() string               { return e.d.entries[e.i].Name }
func (e *dirEntry) IsDir() bool                { return e.d.entries[e.i].Mode == filemode.Dir }
func (e *dirEntry) Type() fs.FileMode          { return fsMode(e.d.entries[e.i].Mode).Type() }
func (e *dirEntry) String() string             { return fs.FormatDirEntry(e) }
func (e *dirEntry) Info() (fs.FileInfo, error) { return e.info() }

func (e *dirEntry) info() (fs.FileInfo, error) {
	te := e.d.entries[e.i]
	n := node{mode: te.Mode, hash: te.Hash, idx: e.i, par: e.d}
	e.t.mu.Lock()
	fi, err := e.t.info(te.Name, n)
	e.t.mu.Unlock()
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: path.Join(e.d.path, te.Name), Err: err}
	}
	return fi, nil
}

type fileInfo struct {
	name    string
	size    int64
	mode    fs.FileMode
	modTime time.Time
	hash    plumbing.Hash
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.size }
func (i *fileInfo) Mode() fs.FileMode  { return i.mode }
func (i *fileInfo) ModTime() time.Time { return i.modTime }
func (i *fileInfo) IsDir() bool        { return i.mode.IsDir() }
func (i *fileInfo) Sys() any           { return ObjectInfo{Hash: i.hash.String()} }
func (i *fileInfo) String() string     { return fs.FormatFileInfo(i) }

// blobFile is an open file. Its contents are read on the first Read, Seek or
// ReadAt, so opening to Stat costs nothing.
type blobFile struct {
	f      *treeFS
	name   string
	n      node
	r      *bytes.Reader
	closed bool
}

func (b *blobFile) Stat() (fs.FileInfo, error) {
	if b.closed {
		return nil, &fs.PathError{Op: "stat", Path: b.name, Err: fs.ErrClosed}
	}
	b.f.t.mu.Lock()
	fi, err := b.f.t.info(path.Base(b.name), b.n)
	b.f.t.mu.Unlock()
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: b.name, Err: err}
	}
	return fi, nil
}

func (b *blobFile) load(op string) error {
	if b.closed {
		return &fs.PathError{Op: op, Path: b.name, Err: fs.ErrClosed}
	}
	if b.r != nil {
		return nil
	}
	b.f.t.mu.Lock()
	data, err := b.f.t.readBlob(b.n.hash)
	b.f.t.mu.Unlock()
	if err != nil {
		return &fs.PathError{Op: op, Path: b.name, Err: err}
	}
	b.r = bytes.NewReader(data)
	return nil
}

func (b *blobFile) Read(p []byte) (int, error) {
	if err := b.load("read"); err != nil {
		return 0, err
	}
	return b.r.Read(p)
}

func (b *blobFile) ReadAt(p []byte, off int64) (int, error) {
	if err := b.load("read"); err != nil {
		return 0, err
	}
	return b.r.ReadAt(p, off)
}

func (b *blobFile) Seek(offset int64, whence int) (int64, error) {
	if err := b.load("seek"); err != nil {
		return 0, err
	}
	return b.r.Seek(offset, whence)
}

func (b *blobFile) Close() error {
	if b.closed {
		return &fs.PathError{Op: "close", Path: b.name, Err: fs.ErrClosed}
	}
	b.closed, b.r = true, nil
	return nil
}

// dirFile is an open directory.
type dirFile struct {
	f      *treeFS
	name   string
	n      node
	off    int
	closed bool
}

func (d *dirFile) Stat() (fs.FileInfo, error) {
	if d.closed {
		return nil, &fs.PathError{Op: "stat", Path: d.name, Err: fs.ErrClosed}
	}
	return &fileInfo{name: path.Base(d.name), mode: fs.ModeDir | 0o755, modTime: d.f.t.modTime, hash: d.n.hash}, nil
}

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: errIsDir}
}

func (d *dirFile) ReadDir(count int) ([]fs.DirEntry, error) {
	if d.closed {
		return nil, &fs.PathError{Op: "readdir", Path: d.name, Err: fs.ErrClosed}
	}
	total := len(d.n.dir.entries)
	rest := total - d.off
	if count > 0 && rest == 0 {
		return nil, io.EOF
	}
	if count > 0 && count < rest {
		rest = count
	}
	out := d.f.entries(d.n.dir, d.off, d.off+rest)
	d.off += rest
	return out, nil
}

func (d *dirFile) Close() error {
	if d.closed {
		return &fs.PathError{Op: "close", Path: d.name, Err: fs.ErrClosed}
	}
	d.closed = true
	return nil
}
