package gitsource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/gittest"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	wt := gittest.New(t)
	wtHead := wt.Commit(map[string]string{"fleet/a.yaml": "a", "other/b.yaml": "b"}, "init")
	bare := gittest.NewBare(t)
	bareHead := bare.Commit(map[string]string{"a.yaml": "a"}, "init")
	empty := t.TempDir()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		path       string
		wantHead   string
		wantSubdir string
		wantErr    error
	}{
		{name: "worktree", path: wt.Path(), wantHead: wtHead, wantSubdir: "."},
		{name: "worktree subdir", path: filepath.Join(wt.Path(), "fleet"), wantHead: wtHead, wantSubdir: "fleet"},
		{name: "git dir", path: filepath.Join(wt.Path(), ".git"), wantHead: wtHead, wantSubdir: "."},
		{name: "bare", path: bare.Path(), wantHead: bareHead, wantSubdir: "."},
		{name: "not a repo", path: empty, wantErr: ErrNotRepository},
		{name: "missing", path: filepath.Join(empty, "nope"), wantErr: ErrNotRepository},
		{name: "file", path: file, wantErr: ErrNotRepository},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Open(ctx, tt.path)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Open(%s) error = %v, want %v", tt.path, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.path) {
					t.Errorf("error %q does not name the path", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%s): %v", tt.path, err)
			}
			c, err := r.Resolve("HEAD")
			if err != nil {
				t.Fatal(err)
			}
			if c.Hash != tt.wantHead {
				t.Errorf("HEAD = %s, want %s", c.Hash, tt.wantHead)
			}
			if r.Subdir() != tt.wantSubdir {
				t.Errorf("Subdir() = %q, want %q", r.Subdir(), tt.wantSubdir)
			}
			if err := r.Fetch(ctx); err != nil {
				t.Errorf("Fetch of a local repository: %v", err)
			}
		})
	}
}

func TestOpenSubdirSnapshot(t *testing.T) {
	wt := gittest.New(t)
	wt.Symlink("fleet/shared.yaml", "../shared/s.yaml")
	wt.Commit(map[string]string{"fleet/a.yaml": "a", "shared/s.yaml": "s"}, "init")
	r, err := Open(context.Background(), filepath.Join(wt.Path(), "fleet"))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := r.Snapshot(context.Background(), "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if got := readDirNames(t, snap.FS, "."); got != "a.yaml shared.yaml" {
		t.Errorf("subdir snapshot lists %q", got)
	}
	if b, err := readFile(snap.FS, "shared.yaml"); err != nil || string(b) != "s" {
		t.Errorf("link to the rest of the repository = %q, %v", b, err)
	}
	// The status branch lives at the root, whatever folder the fleet is in.
	root, err := r.RootSnapshot(context.Background(), "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if got := readDirNames(t, root.FS, "."); got != "fleet shared" {
		t.Errorf("root snapshot lists %q", got)
	}
}

func TestIsURL(t *testing.T) {
	tests := map[string]bool{
		"https://github.com/org/fleet.git": true,
		"ssh://git@host:2222/fleet.git":    true,
		"file:///srv/git/fleet.git":        true,
		"git@github.com:org/fleet.git":     true,
		"host:fleet.git":                   true,
		"/srv/git/fleet.git":               false,
		"./fleet":                          false,
		"fleet":                            false,
		"./a:b":                            false,
		"/x/y:z":                           false,
		"../fleet.git":                     false,
	}
	for arg, want := range tests {
		if got := IsURL(arg); got != want {
			t.Errorf("IsURL(%q) = %v, want %v", arg, got, want)
		}
	}
}

func TestOpenOrClone(t *testing.T) {
	ctx := context.Background()
	src := gittest.NewBare(t)
	head := src.Commit(map[string]string{"a": "1"}, "init")
	for _, arg := range []string{src.Path(), src.URL()} {
		r, err := OpenOrClone(ctx, arg, CloneOptions{})
		if err != nil {
			t.Fatalf("OpenOrClone(%s): %v", arg, err)
		}
		c, err := r.Resolve("HEAD")
		if err != nil || c.Hash != head {
			t.Errorf("OpenOrClone(%s): HEAD = %v, %v", arg, c, err)
		}
		if isRemote := r.Remote() != ""; isRemote != strings.HasPrefix(arg, "file://") {
			t.Errorf("OpenOrClone(%s): Remote() = %q", arg, r.Remote())
		}
	}
}

func TestResolve(t *testing.T) {
	src := gittest.NewBare(t)
	c1 := src.Commit(map[string]string{"a": "1"}, "first commit\n\nwith a body")
	src.Tag("v1")
	src.AnnotatedTag("v1-annotated", "release one")
	c2 := src.Commit(map[string]string{"a": "2"}, "second commit")
	src.Checkout("feature")
	c3 := src.Commit(map[string]string{"a": "3"}, "feature commit")
	src.Checkout("main")
	c4 := src.Commit(map[string]string{"a": "4"}, "third commit")

	r, err := Open(context.Background(), src.Path())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rev     string
		want    string
		subject string
		wantErr error
	}{
		{rev: "HEAD", want: c4, subject: "third commit"},
		{rev: "main", want: c4},
		{rev: "refs/heads/main", want: c4},
		{rev: "feature", want: c3, subject: "feature commit"},
		{rev: "v1", want: c1, subject: "first commit"},
		{rev: "v1-annotated", want: c1},
		{rev: c2, want: c2},
		{rev: c2[:7], want: c2},
		{rev: c2[:12], want: c2},
		{rev: "HEAD~1", want: c2},
		{rev: "HEAD~2", want: c1},
		{rev: "main^", want: c2},
		{rev: "feature~1", want: c2},
		{rev: "HEAD~3", wantErr: ErrUnknownRevision},
		{rev: "nope", wantErr: ErrUnknownRevision},
		{rev: "v9", wantErr: ErrUnknownRevision},
		{rev: "0123456", wantErr: ErrUnknownRevision},
		{rev: "main^^^^^^", wantErr: ErrUnknownRevision},
		{rev: "", wantErr: ErrUnknownRevision},
		{rev: "a..b", wantErr: ErrUnknownRevision},
	}
	for _, tt := range tests {
		t.Run(tt.rev, func(t *testing.T) {
			c, err := r.Resolve(tt.rev)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Resolve(%q) = %v, %v; want error %v", tt.rev, c, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.rev)) {
					t.Errorf("error %q does not name the revision", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tt.rev, err)
			}
			if c.Hash != tt.want || c.Short != tt.want[:7] {
				t.Errorf("Resolve(%q) = %s (%s), want %s", tt.rev, c.Hash, c.Short, tt.want)
			}
			if tt.subject != "" && c.Subject != tt.subject {
				t.Errorf("Subject = %q, want %q", c.Subject, tt.subject)
			}
			if c.Author != gittest.AuthorName+" <"+gittest.AuthorEmail+">" || c.Time.Before(gittest.Epoch) {
				t.Errorf("Author %q at %v", c.Author, c.Time)
			}
		})
	}
}

// TestFetchLocalSeesNewPacks: commits pushed into a local repository after
// Open, in a new packfile, are visible after Fetch.
func TestFetchLocalSeesNewPacks(t *testing.T) {
	ctx := context.Background()
	src := gittest.NewBare(t)
	src.Commit(map[string]string{"a": "1"}, "first")
	r, err := Open(ctx, src.Path())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Snapshot(ctx, "HEAD"); err != nil {
		t.Fatal(err)
	}
	head := src.CommitMany(func(add func(string, string)) {
		for i := range 300 {
			add(fmt.Sprintf("f%d", i), fmt.Sprint(i))
		}
	}, "many")
	if err := r.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := r.Snapshot(ctx, "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Commit.Hash != head {
		t.Fatalf("HEAD after Fetch = %s, want %s", snap.Commit.Hash, head)
	}
	if b, err := readFile(snap.FS, "f299"); err != nil || string(b) != "299" {
		t.Fatalf("f299 = %q, %v", b, err)
	}
}

// The key and known_hosts given for machines do not stop a clone over
// another transport than ssh.
func TestOpenOrCloneIgnoresSSHOptionsForOtherURLs(t *testing.T) {
	bare := gittest.NewBare(t)
	head := bare.Commit(map[string]string{"a.yaml": "a"}, "init")
	r, err := OpenOrClone(context.Background(), "file://"+bare.Path(), CloneOptions{SSHKeyPath: "/nonexistent/id_ed25519", KnownHosts: "/nonexistent/known_hosts"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if c, err := r.Resolve("HEAD"); err != nil || c.Hash != head {
		t.Errorf("HEAD of the clone = %v, %v; want %s", c.Hash, err, head)
	}
	if !IsSSH("git@example.com:fleet.git") || !IsSSH("ssh://git@example.com/fleet.git") || IsSSH("https://example.com/fleet.git") || IsSSH("/srv/fleet.git") {
		t.Error("IsSSH is wrong")
	}
}
