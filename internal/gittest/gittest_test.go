package gittest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
)

func TestWorktreeRepo(t *testing.T) {
	r := New(t)
	if r.Head() != "" {
		t.Fatalf("Head of empty repo = %q", r.Head())
	}
	c1 := r.Commit(map[string]string{"a.yaml": "a: 1\n", "dir/b.yaml": "", "dir/sub/c": "c"}, "first")
	r.Symlink("link", "dir/b.yaml")
	c2 := r.Commit(map[string]string{"a.yaml": "a: 2\n"}, "second")
	if c1 == c2 || r.Head() != c2 {
		t.Fatalf("commits %s %s, head %s", c1, c2, r.Head())
	}

	got, err := os.ReadFile(filepath.Join(r.Path(), "a.yaml"))
	if err != nil || string(got) != "a: 2\n" {
		t.Fatalf("worktree a.yaml = %q, %v", got, err)
	}
	if target, err := os.Readlink(filepath.Join(r.Path(), "link")); err != nil || target != "dir/b.yaml" {
		t.Fatalf("worktree link = %q, %v", target, err)
	}
	wt, err := r.Repository().Worktree()
	if err != nil {
		t.Fatal(err)
	}
	st, err := wt.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsClean() {
		t.Fatalf("worktree not clean after commit:\n%s", st)
	}

	r.Remove("dir/sub")
	r.Commit(nil, "remove sub")
	if _, err := os.Stat(filepath.Join(r.Path(), "dir", "sub")); !os.IsNotExist(err) {
		t.Fatalf("dir/sub still in worktree: %v", err)
	}

	c, err := r.Repository().CommitObject(plumbing.NewHash(c2))
	if err != nil {
		t.Fatal(err)
	}
	if want := Epoch.Add(time.Minute); !c.Author.When.Equal(want) || c.Author.Name != AuthorName {
		t.Fatalf("second commit author %v, want %s at %v", c.Author, AuthorName, want)
	}
	if c.Message != "second\n" || len(c.ParentHashes) != 1 || c.ParentHashes[0].String() != c1 {
		t.Fatalf("second commit message %q parents %v", c.Message, c.ParentHashes)
	}
}

func TestDeterministicHashes(t *testing.T) {
	build := func() string {
		r := NewBare(t)
		r.Commit(map[string]string{"x": "1", "y/z": "2"}, "one")
		return r.Commit(map[string]string{"x": "3"}, "two")
	}
	if a, b := build(), build(); a != b {
		t.Fatalf("same commits, different hashes: %s %s", a, b)
	}
}

func TestBranchesAndTags(t *testing.T) {
	r := NewBare(t)
	base := r.Commit(map[string]string{"f": "main"}, "base")
	r.Tag("v1")
	r.AnnotatedTag("v1-annotated", "release 1")
	r.Checkout("feature")
	feat := r.Commit(map[string]string{"f": "feature"}, "feature work")
	r.Checkout("main")
	if r.Head() != base {
		t.Fatalf("main head %s, want %s", r.Head(), base)
	}
	repo := r.Repository()
	for ref, want := range map[string]string{"refs/tags/v1": base, "refs/heads/feature": feat, "refs/heads/main": base} {
		got, err := repo.Reference(plumbing.ReferenceName(ref), true)
		if err != nil || got.Hash().String() != want {
			t.Errorf("%s = %v, %v; want %s", ref, got, err, want)
		}
	}
	if _, err := repo.Tag("v1-annotated"); err != nil {
		t.Errorf("annotated tag: %v", err)
	}
}

func TestWorktreeCheckout(t *testing.T) {
	r := New(t)
	r.Commit(map[string]string{"f": "main", "only-main": "x"}, "base")
	r.Checkout("feature")
	r.Remove("only-main")
	r.Commit(map[string]string{"f": "feature"}, "feature")
	if _, err := os.Stat(filepath.Join(r.Path(), "only-main")); !os.IsNotExist(err) {
		t.Fatalf("only-main present on feature: %v", err)
	}
	r.Checkout("main")
	if b, err := os.ReadFile(filepath.Join(r.Path(), "f")); err != nil || string(b) != "main" {
		t.Fatalf("f on main = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(r.Path(), "only-main")); err != nil {
		t.Fatalf("only-main missing on main: %v", err)
	}
}

func TestCommitMany(t *testing.T) {
	r := NewBare(t)
	start := time.Now()
	h := r.CommitMany(func(add func(path, content string)) {
		for i := range 10000 {
			add(fmt.Sprintf("apps/app%03d/file%02d.yaml", i/100, i%100), fmt.Sprintf("n: %d\n", i))
		}
	}, "ten thousand files")
	t.Logf("10,000 files committed in %v", time.Since(start))
	c, err := r.Repository().CommitObject(plumbing.NewHash(h))
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.File("apps/app042/file07.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := f.Contents(); s != "n: 4207\n" {
		t.Fatalf("contents %q", s)
	}
	// A second, small commit on top keeps the rest of the tree.
	h2 := r.Commit(map[string]string{"apps/app000/file00.yaml": "changed"}, "one change")
	c2, _ := r.Repository().CommitObject(plumbing.NewHash(h2))
	if _, err := c2.File("apps/app099/file99.yaml"); err != nil {
		t.Fatal(err)
	}
}
