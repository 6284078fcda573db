package gitsource

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/gittest"
)

func TestCloneOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts CloneOptions
		want string // substring of the error; "" for valid
	}{
		{name: "file", opts: CloneOptions{URL: "file:///srv/fleet.git"}},
		{name: "https", opts: CloneOptions{URL: "https://example.com/fleet.git", Branch: "main", Depth: 1}},
		{name: "ssh", opts: CloneOptions{URL: "ssh://git@example.com:2222/fleet.git", SSHKeyPath: "/k", KnownHosts: "/kh"}},
		{name: "scp-like", opts: CloneOptions{URL: "git@example.com:org/fleet.git", KnownHosts: "/kh"}},
		{name: "no url", opts: CloneOptions{}, want: "url is required"},
		{name: "local path", opts: CloneOptions{URL: "/srv/fleet.git"}, want: "is a local path"},
		{name: "http", opts: CloneOptions{URL: "http://example.com/fleet.git"}, want: "unencrypted"},
		{name: "git protocol", opts: CloneOptions{URL: "git://example.com/fleet.git"}, want: "unencrypted"},
		{name: "unknown scheme", opts: CloneOptions{URL: "ftp://example.com/fleet.git"}, want: "unsupported scheme"},
		{name: "negative depth", opts: CloneOptions{URL: "file:///x", Depth: -1}, want: "depth -1"},
		{name: "bad branch", opts: CloneOptions{URL: "file:///x", Branch: "a..b"}, want: "not a valid branch"},
		{name: "ssh key on https", opts: CloneOptions{URL: "https://example.com/x", SSHKeyPath: "/k"}, want: "ssh urls only"},
		{name: "password hidden", opts: CloneOptions{URL: "https://u:s3cret@example.com/x", KnownHosts: "/kh"}, want: "u:redacted@"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

// origin is a bare repository with two branches and a tag.
func origin(t *testing.T) (src *gittest.Repo, main, feature string) {
	t.Helper()
	src = gittest.NewBare(t)
	src.Commit(map[string]string{"app.yaml": "v1"}, "one")
	src.Tag("v1")
	main = src.Commit(map[string]string{"app.yaml": "v2"}, "two")
	src.Checkout("feature")
	feature = src.Commit(map[string]string{"app.yaml": "feature"}, "feature")
	src.Checkout("main")
	return src, main, feature
}

func mustResolve(t *testing.T, r *Repo, rev string) string {
	t.Helper()
	c, err := r.Resolve(rev)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", rev, err)
	}
	return c.Hash
}

func TestCloneFileURL(t *testing.T) {
	ctx := context.Background()
	for _, cache := range []bool{false, true} {
		name := "memory"
		if cache {
			name = "cache"
		}
		t.Run(name, func(t *testing.T) {
			src, main, feature := origin(t)
			opts := CloneOptions{URL: src.URL()}
			if cache {
				opts.CacheDir = t.TempDir()
			}
			r, err := Clone(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := mustResolve(t, r, "HEAD"); got != main {
				t.Errorf("HEAD = %s, want %s", got, main)
			}
			if got := mustResolve(t, r, "feature"); got != feature {
				t.Errorf("feature = %s, want %s", got, feature)
			}
			if got := mustResolve(t, r, "v1"); got != mustResolve(t, r, "HEAD~1") {
				t.Errorf("v1 = %s", got)
			}
			if (r.Path() != "") != cache || r.Remote() != src.URL() {
				t.Errorf("Path() = %q, Remote() = %q", r.Path(), r.Remote())
			}

			// New commits upstream arrive with Fetch, as does a new branch.
			next := src.Commit(map[string]string{"app.yaml": "v3"}, "three")
			src.Branch("release")
			if err := r.Fetch(ctx); err != nil {
				t.Fatal(err)
			}
			if err := r.Fetch(ctx); err != nil {
				t.Fatalf("Fetch when up to date: %v", err)
			}
			if got := mustResolve(t, r, "main"); got != next {
				t.Errorf("main after Fetch = %s, want %s", got, next)
			}
			if got := mustResolve(t, r, "HEAD"); got != next {
				t.Errorf("HEAD after Fetch = %s, want %s", got, next)
			}
			if got := mustResolve(t, r, "release"); got != next {
				t.Errorf("release after Fetch = %s, want %s", got, next)
			}
			snap, err := r.Snapshot(ctx, "HEAD")
			if err != nil {
				t.Fatal(err)
			}
			if b, err := fs.ReadFile(snap.FS, "app.yaml"); err != nil || string(b) != "v3" {
				t.Errorf("app.yaml = %q, %v", b, err)
			}
		})
	}
}

func TestCloneCacheReuse(t *testing.T) {
	ctx := context.Background()
	src, main, _ := origin(t)
	cacheDir := t.TempDir()
	opts := CloneOptions{URL: src.URL(), CacheDir: cacheDir}
	first, err := Clone(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(first.Path()) != cacheDir {
		t.Fatalf("clone at %s, not in %s", first.Path(), cacheDir)
	}
	// Leave a marker: a reused clone keeps it, a fresh one would not.
	marker := filepath.Join(first.Path(), "berth-test-marker")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	next := src.Commit(map[string]string{"app.yaml": "v3"}, "three")

	second, err := Clone(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if second.Path() != first.Path() {
		t.Fatalf("second clone at %s, first at %s", second.Path(), first.Path())
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("cache was not reused: %v", err)
	}
	if got := mustResolve(t, second, "HEAD"); got != next {
		t.Errorf("reused clone HEAD = %s, want %s (fetched); was %s", got, next, main)
	}
	entries, err := os.ReadDir(cacheDir)
	if err != nil || len(entries) != 1 {
		t.Errorf("cache dir holds %v, %v; want one clone and no leftovers", entries, err)
	}

	// Another URL gets its own directory.
	other := gittest.NewBare(t)
	other.Commit(map[string]string{"x": "y"}, "other")
	third, err := Clone(ctx, CloneOptions{URL: other.URL(), CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	if third.Path() == first.Path() {
		t.Errorf("two URLs share the cache directory %s", third.Path())
	}

	// A directory that holds a clone of something else is refused.
	if err := os.Rename(third.Path(), filepath.Join(cacheDir, cacheName(src.URL()+"-x"))); err != nil {
		t.Fatal(err)
	}
	_, err = Clone(ctx, CloneOptions{URL: src.URL() + "-x", CacheDir: cacheDir})
	if err == nil || !strings.Contains(err.Error(), "is not a clone of") {
		t.Errorf("clone into a foreign cache = %v", err)
	}
}

func TestCloneShallowSingleBranch(t *testing.T) {
	ctx := context.Background()
	src, _, feature := origin(t)
	for _, cache := range []string{"", t.TempDir()} {
		r, err := Clone(ctx, CloneOptions{URL: src.URL(), Branch: "feature", Depth: 1, CacheDir: cache})
		if err != nil {
			t.Fatal(err)
		}
		if got := mustResolve(t, r, "HEAD"); got != feature {
			t.Errorf("HEAD = %s, want feature %s", got, feature)
		}
		if _, err := r.Resolve("main"); !errors.Is(err, ErrUnknownRevision) {
			t.Errorf("main in a single-branch clone: %v", err)
		}
		if _, err := r.Resolve("HEAD~1"); !errors.Is(err, ErrUnknownRevision) {
			t.Errorf("HEAD~1 beyond a depth-1 clone: %v", err)
		}
		src.Checkout("feature")
		next := src.Commit(map[string]string{"app.yaml": "feature 2"}, "feature 2")
		src.Checkout("main")
		if err := r.Fetch(ctx); err != nil {
			t.Fatal(err)
		}
		if got := mustResolve(t, r, "feature"); got != next {
			t.Errorf("feature after Fetch = %s, want %s", got, next)
		}
		feature = next
	}
}

func TestCloneErrors(t *testing.T) {
	ctx := context.Background()
	src, _, _ := origin(t)
	tests := []struct {
		name    string
		opts    CloneOptions
		wantErr error
		want    string
	}{
		{name: "unknown branch", opts: CloneOptions{URL: src.URL(), Branch: "nope"}, wantErr: ErrUnknownRevision, want: `branch "nope"`},
		{name: "unknown branch cached", opts: CloneOptions{URL: src.URL(), Branch: "nope", CacheDir: t.TempDir()}, wantErr: ErrUnknownRevision},
		{name: "missing repository", opts: CloneOptions{URL: "file://" + filepath.Join(t.TempDir(), "none.git")}, want: "none.git"},
		{name: "invalid", opts: CloneOptions{URL: "http://example.com/x"}, want: "unencrypted"},
		{name: "missing known_hosts", opts: CloneOptions{URL: "ssh://git@127.0.0.1:1/x.git", KnownHosts: filepath.Join(t.TempDir(), "known_hosts")}, wantErr: fs.ErrNotExist, want: "known_hosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Clone(ctx, tt.opts)
			if err == nil {
				t.Fatal("Clone succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Clone error %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Clone error %q does not say %q", err, tt.want)
			}
		})
	}
	if entries, _ := os.ReadDir(tests[1].opts.CacheDir); len(entries) != 0 {
		t.Errorf("failed clone left %v in the cache", entries)
	}
}

// TestCloneNoDefaultKnownHosts: without any known_hosts file, an ssh clone
// fails before connecting instead of trusting any host key.
func TestCloneNoDefaultKnownHosts(t *testing.T) {
	t.Setenv("SSH_KNOWN_HOSTS", filepath.Join(t.TempDir(), "none"))
	_, err := Clone(context.Background(), CloneOptions{URL: "git@127.0.0.1:x.git"})
	if err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Fatalf("Clone = %v, want a known_hosts error", err)
	}
}

func TestCacheName(t *testing.T) {
	a := cacheName("https://u:one@example.com/org/fleet.git")
	b := cacheName("https://u:two@example.com/org/fleet.git")
	c := cacheName("git@example.com:org/fleet.git")
	if a != b {
		t.Errorf("token rotation changes the cache: %s %s", a, b)
	}
	if a == c || !strings.HasPrefix(a, "fleet-") || !strings.HasSuffix(a, ".git") {
		t.Errorf("cache names %s %s", a, c)
	}
	if got := cacheName("file:///"); !strings.HasPrefix(got, "repo-") {
		t.Errorf("cacheName(file:///) = %s", got)
	}
}
