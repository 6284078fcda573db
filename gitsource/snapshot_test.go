package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage"

	"berth.dev/berth/internal/gittest"
)

func snapshotOf(t testing.TB, src *gittest.Repo, rev string) *Snapshot {
	t.Helper()
	r, err := Open(context.Background(), src.Path())
	if err != nil {
		t.Fatal(err)
	}
	snap, err := r.Snapshot(context.Background(), rev)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func readFile(fsys fs.FS, name string) ([]byte, error) { return fs.ReadFile(fsys, name) }

func readDirNames(t *testing.T, fsys fs.FS, dir string) string {
	t.Helper()
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

func TestSnapshotFS(t *testing.T) {
	src := gittest.New(t)
	src.Symlink("apps/web/link.yaml", "deploy.yaml")
	src.Symlink("apps/up.yaml", "../machines/m1.yaml")
	src.Symlink("apps/chain.yaml", "up.yaml")
	src.Symlink("alias", "apps/web")
	src.Commit(map[string]string{
		"README.md":              "# fleet\n",
		"machines/m1.yaml":       "kind: Machine\n",
		"apps/web/deploy.yaml":   "kind: Deployment\n",
		"apps/web/service.yaml":  "kind: Service\n",
		"apps/db/stateful.yaml":  "kind: StatefulSet\n",
		"apps/db/deep/er/x.yaml": "",
		"a.b":                    "git orders this before the a/ directory",
		"a/b":                    "",
	}, "fleet")
	snap := snapshotOf(t, src, "HEAD")

	if err := fstest.TestFS(snap.FS,
		"README.md", "machines/m1.yaml", "apps/web/deploy.yaml", "apps/web/service.yaml",
		"apps/db/stateful.yaml", "apps/db/deep/er/x.yaml", "apps/web/link.yaml", "a.b", "a/b",
	); err != nil {
		t.Fatal(err)
	}

	if got := readDirNames(t, snap.FS, "."); got != "README.md a a.b alias apps machines" {
		t.Errorf("root lists %q", got)
	}
	reads := map[string]string{
		"apps/web/deploy.yaml":   "kind: Deployment\n",
		"apps/web/link.yaml":     "kind: Deployment\n",
		"apps/up.yaml":           "kind: Machine\n",
		"apps/chain.yaml":        "kind: Machine\n",
		"alias/service.yaml":     "kind: Service\n",
		"apps/db/deep/er/x.yaml": "",
	}
	for name, want := range reads {
		b, err := readFile(snap.FS, name)
		if err != nil || string(b) != want {
			t.Errorf("ReadFile(%s) = %q, %v; want %q", name, b, err, want)
		}
		f, err := snap.FS.Open(name)
		if err != nil {
			t.Errorf("Open(%s): %v", name, err)
			continue
		}
		b, err = io.ReadAll(f)
		f.Close()
		if err != nil || string(b) != want {
			t.Errorf("Open(%s)+Read = %q, %v; want %q", name, b, err, want)
		}
	}

	// ReadDir reports links as links; Stat follows them; Lstat does not.
	entries, err := fs.ReadDir(snap.FS, "apps/web")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "link.yaml" && e.Type() != fs.ModeSymlink {
			t.Errorf("link.yaml has type %v, want symlink", e.Type())
		}
	}
	if fi, err := fs.Stat(snap.FS, "apps/web/link.yaml"); err != nil || !fi.Mode().IsRegular() || fi.Size() != int64(len("kind: Deployment\n")) || fi.Name() != "link.yaml" {
		t.Errorf("Stat(link.yaml) = %v, %v", fi, err)
	}
	if fi, err := fs.Lstat(snap.FS, "apps/web/link.yaml"); err != nil || fi.Mode().Type() != fs.ModeSymlink || fi.Size() != int64(len("deploy.yaml")) {
		t.Errorf("Lstat(link.yaml) = %v, %v", fi, err)
	}
	if target, err := fs.ReadLink(snap.FS, "apps/up.yaml"); err != nil || target != "../machines/m1.yaml" {
		t.Errorf("ReadLink(apps/up.yaml) = %q, %v", target, err)
	}

	for _, name := range []string{"nope", "apps/nope.yaml", "README.md/x", "apps/web/deploy.yaml/x"} {
		if _, err := fs.Stat(snap.FS, name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Stat(%s) = %v, want fs.ErrNotExist", name, err)
		}
	}
	for _, name := range []string{"/README.md", "../x", "apps/../README.md", "apps/", ""} {
		if _, err := snap.FS.Open(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want fs.ErrInvalid", name, err)
		}
	}
}

func TestSnapshotSymlinkEscapes(t *testing.T) {
	src := gittest.NewBare(t)
	src.Symlink("a/b.yaml", "../../etc/passwd")
	src.Symlink("abs.yaml", "/etc/passwd")
	src.Symlink("a/up.yaml", "../README.md")
	src.Symlink("a/dir", "..")
	src.Symlink("a/dirup", "../..")
	src.Symlink("via.yaml", "a/b.yaml")
	src.Symlink("loop1", "loop2")
	src.Symlink("loop2", "loop1")
	src.Symlink("dangling", "missing.yaml")
	src.Commit(map[string]string{"README.md": "readme"}, "links")
	snap := snapshotOf(t, src, "HEAD")

	tests := []struct {
		name    string
		want    string // contents when readable
		wantErr error
		msg     string
	}{
		{name: "a/up.yaml", want: "readme"},
		{name: "a/dir/README.md", want: "readme"},
		{name: "a/b.yaml", wantErr: fs.ErrPermission, msg: `symlink "a/b.yaml" points outside the repository`},
		{name: "abs.yaml", wantErr: fs.ErrPermission, msg: `symlink "abs.yaml" points outside the repository`},
		{name: "via.yaml", wantErr: fs.ErrPermission, msg: `symlink "a/b.yaml" points outside the repository`},
		{name: "a/dirup/etc/passwd", wantErr: fs.ErrPermission, msg: `symlink "a/dirup" points outside the repository`},
		{name: "loop1", msg: "too many levels of symbolic links"},
		{name: "dangling", wantErr: fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, readErr := fs.ReadFile(snap.FS, tt.name)
			_, statErr := fs.Stat(snap.FS, tt.name)
			_, openErr := snap.FS.Open(tt.name)
			for op, err := range map[string]error{"ReadFile": readErr, "Stat": statErr, "Open": openErr} {
				if tt.want != "" {
					if err != nil {
						t.Errorf("%s: %v", op, err)
					}
					continue
				}
				if err == nil {
					t.Errorf("%s succeeded, want an error", op)
					continue
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("%s error %v, want %v", op, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("%s error %q does not say %q", op, err, tt.msg)
				}
			}
			if tt.want != "" && string(b) != tt.want {
				t.Errorf("ReadFile = %q, want %q", b, tt.want)
			}
		})
	}
	// Listing and Lstat never follow, so they work on any link.
	if _, err := fs.ReadDir(snap.FS, "a"); err != nil {
		t.Errorf("ReadDir(a): %v", err)
	}
	if fi, err := fs.Lstat(snap.FS, "abs.yaml"); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("Lstat(abs.yaml) = %v, %v", fi, err)
	}
}

func TestSnapshotSubmodule(t *testing.T) {
	src := gittest.NewBare(t)
	src.Gitlink("vendor/lib", strings.Repeat("ab", 20))
	src.Commit(map[string]string{"a.yaml": "a"}, "with submodule")
	snap := snapshotOf(t, src, "HEAD")
	entries, err := fs.ReadDir(snap.FS, "vendor")
	if err != nil || len(entries) != 1 || entries[0].Type() != fs.ModeIrregular {
		t.Fatalf("ReadDir(vendor) = %v, %v; want one irregular entry", entries, err)
	}
	if fi, err := fs.Stat(snap.FS, "vendor/lib"); err != nil || fi.Mode() != fs.ModeIrregular {
		t.Errorf("Stat(vendor/lib) = %v, %v", fi, err)
	}
	if _, err := fs.ReadFile(snap.FS, "vendor/lib"); err == nil || !strings.Contains(err.Error(), "submodule") {
		t.Errorf("ReadFile(vendor/lib) error = %v, want a submodule error", err)
	}
	if _, err := fs.Stat(snap.FS, "vendor/lib/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat inside a submodule = %v, want fs.ErrNotExist", err)
	}
}

// countingStorer counts blob reads, to prove sizes come without them.
type countingStorer struct {
	storage.Storer
	blobReads atomic.Int64
}

func (c *countingStorer) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	if t == plumbing.BlobObject || t == plumbing.AnyObject {
		c.blobReads.Add(1)
	}
	return c.Storer.EncodedObject(t, h)
}

func TestSnapshotSizesWithoutReading(t *testing.T) {
	big := strings.Repeat("x", 8<<20)
	for _, packed := range []bool{false, true} {
		t.Run(fmt.Sprintf("packed=%v", packed), func(t *testing.T) {
			src := gittest.NewBare(t)
			src.CommitMany(func(add func(string, string)) {
				add("big.yaml", big)
				add("dir/small.yaml", "small")
				if packed { // enough objects for gittest to write a packfile
					for i := range 200 {
						add(fmt.Sprintf("more/f%d", i), fmt.Sprint(i))
					}
				}
			}, "sizes")
			r, err := Open(context.Background(), src.Path())
			if err != nil {
				t.Fatal(err)
			}
			counter := &countingStorer{Storer: r.repo.Storer}
			r.repo.Storer = counter
			snap, err := r.Snapshot(context.Background(), "HEAD")
			if err != nil {
				t.Fatal(err)
			}
			fi, err := fs.Stat(snap.FS, "big.yaml")
			if err != nil || fi.Size() != int64(len(big)) {
				t.Fatalf("Stat(big.yaml) = %v, %v", fi, err)
			}
			f, err := snap.FS.Open("big.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := f.Stat(); err != nil || fi.Size() != int64(len(big)) {
				t.Fatalf("Open+Stat(big.yaml) = %v, %v", fi, err)
			}
			f.Close()
			err = fs.WalkDir(snap.FS, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				_, err = d.Info()
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if n := counter.blobReads.Load(); n != 0 {
				t.Fatalf("sizes read %d blobs, want 0", n)
			}
			if b, err := fs.ReadFile(snap.FS, "dir/small.yaml"); err != nil || string(b) != "small" {
				t.Fatalf("ReadFile = %q, %v", b, err)
			}
			if n := counter.blobReads.Load(); n != 1 {
				t.Fatalf("ReadFile read %d blobs, want 1", n)
			}
		})
	}
}

func TestSnapshotRevisionsAndConcurrency(t *testing.T) {
	src := gittest.NewBare(t)
	src.Commit(map[string]string{"a.yaml": "v1", "gone.yaml": "x"}, "one")
	src.Remove("gone.yaml")
	src.Commit(map[string]string{"a.yaml": "v2", "new/b.yaml": "b"}, "two")
	r, err := Open(context.Background(), src.Path())
	if err != nil {
		t.Fatal(err)
	}
	old, err := r.Snapshot(context.Background(), "HEAD~1")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := r.Snapshot(context.Background(), "main")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for _, c := range []struct {
				fsys fs.FS
				name string
				want string
			}{{old.FS, "a.yaml", "v1"}, {old.FS, "gone.yaml", "x"}, {cur.FS, "a.yaml", "v2"}, {cur.FS, "new/b.yaml", "b"}} {
				if b, err := fs.ReadFile(c.fsys, c.name); err != nil || string(b) != c.want {
					t.Errorf("ReadFile(%s) = %q, %v; want %q", c.name, b, err, c.want)
				}
			}
		})
	}
	wg.Wait()
	if _, err := fs.Stat(cur.FS, "gone.yaml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("gone.yaml at HEAD: %v", err)
	}
	oldInfo, _ := fs.Stat(old.FS, "a.yaml")
	curInfo, _ := fs.Stat(cur.FS, "a.yaml")
	if oldInfo.Sys().(ObjectInfo).Hash == curInfo.Sys().(ObjectInfo).Hash {
		t.Errorf("changed file keeps its object hash")
	}
	if _, err := r.Snapshot(context.Background(), "nope"); !errors.Is(err, ErrUnknownRevision) {
		t.Errorf("Snapshot(nope) = %v, want ErrUnknownRevision", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Snapshot(ctx, "HEAD"); !errors.Is(err, context.Canceled) {
		t.Errorf("Snapshot with a cancelled context = %v", err)
	}
}

func TestSnapshotSub(t *testing.T) {
	src := gittest.NewBare(t)
	src.Symlink("apps/link", "../base/x.yaml")
	src.Commit(map[string]string{"apps/a.yaml": "a", "base/x.yaml": "x"}, "sub")
	snap := snapshotOf(t, src, "HEAD")
	sub, err := fs.Sub(snap.FS, "apps")
	if err != nil {
		t.Fatal(err)
	}
	if err := fstest.TestFS(sub, "a.yaml", "link"); err != nil {
		t.Fatal(err)
	}
	if b, err := fs.ReadFile(sub, "link"); err != nil || string(b) != "x" {
		t.Errorf("ReadFile(link) = %q, %v", b, err)
	}
	if _, err := fs.Sub(snap.FS, "apps/a.yaml"); err == nil {
		t.Errorf("Sub of a file succeeded")
	}
}

// readAll reads every regular file of fsys (following links) and returns
// how many it read.
func readAll(tb testing.TB, fsys fs.FS) int {
	n := 0
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if _, err := fs.ReadFile(fsys, p); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func build10k(tb testing.TB) *gittest.Repo {
	src := gittest.NewBare(tb)
	src.CommitMany(func(add func(string, string)) {
		for i := range 10000 {
			add(fmt.Sprintf("apps/app%03d/obj%02d.yaml", i/100, i%100), fmt.Sprintf("kind: ConfigMap\nmetadata:\n  name: cm-%d\n", i))
		}
	}, "10k")
	src.Commit(map[string]string{"apps/app000/obj00.yaml": "changed"}, "one change")
	return src
}

// BenchmarkSnapshotRead10k reads all 10,000 small files of a commit, and of
// its parent, as berth plan --from --to does.
func BenchmarkSnapshotRead10k(b *testing.B) {
	src := build10k(b)
	r, err := Open(context.Background(), src.Path())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		for _, rev := range []string{"HEAD~1", "HEAD"} {
			snap, err := r.Snapshot(context.Background(), rev)
			if err != nil {
				b.Fatal(err)
			}
			if n := readAll(b, snap.FS); n != 10000 {
				b.Fatalf("read %d files", n)
			}
		}
	}
}

// BenchmarkSnapshotRead10kCold is BenchmarkSnapshotRead10k with a freshly
// opened repository each time, so nothing is cached: what one berth plan
// run pays.
func BenchmarkSnapshotRead10kCold(b *testing.B) {
	src := build10k(b)
	b.ResetTimer()
	for b.Loop() {
		r, err := Open(context.Background(), src.Path())
		if err != nil {
			b.Fatal(err)
		}
		for _, rev := range []string{"HEAD~1", "HEAD"} {
			snap, err := r.Snapshot(context.Background(), rev)
			if err != nil {
				b.Fatal(err)
			}
			if n := readAll(b, snap.FS); n != 10000 {
				b.Fatalf("read %d files", n)
			}
		}
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSnapshotRead10k(t *testing.T) {
	if testing.Short() {
		t.Skip("testing.Short: builds a 10,000-file repository")
	}
	src := build10k(t)
	r, err := Open(context.Background(), src.Path())
	if err != nil {
		t.Fatal(err)
	}
	snap, err := r.Snapshot(context.Background(), "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if n := readAll(t, snap.FS); n != 10000 {
		t.Fatalf("read %d files, want 10000", n)
	}
	names := readDirNames(t, snap.FS, "apps")
	if !sort.StringsAreSorted(strings.Fields(names)) || len(strings.Fields(names)) != 100 {
		t.Fatalf("apps lists %d entries", len(strings.Fields(names)))
	}
}
