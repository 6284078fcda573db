package gitsource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"berth.dev/berth/internal/gittest"
	"berth.dev/berth/internal/testenv"
)

// gitCLI runs Debian's git in dir and returns its trimmed stdout, failing
// the test on error. It is how these tests check that what go-git wrote is
// what git itself reads.
func gitCLI(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := gitCLIErr(dir, args...)
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func gitCLIErr(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-c", "user.name=CLI", "-c", "user.email=cli@berth.dev"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// fsckClean runs git fsck --strict and fails on any complaint.
func fsckClean(t testing.TB, dir string) {
	t.Helper()
	cmd := exec.Command("git", "fsck", "--strict", "--no-dangling")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("git fsck: %v\n%s", err, out)
	}
}

// openLocal opens the repository at dir for the test, closed at its end.
func openLocal(tb testing.TB, dir string) *Repo {
	tb.Helper()
	r, err := Open(context.Background(), dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

var testAuthor = Signature{Name: "berth test", Email: "status@berth.dev", When: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}

func sourceRepo(t *testing.T) (*gittest.Repo, string) {
	t.Helper()
	testenv.Require(t, "git")
	src := gittest.NewBare(t)
	head := src.Commit(map[string]string{"apps/web.yaml": "kind: Deployment\n"}, "add web")
	return src, head
}

func TestWriteStatusWithoutWorktree(t *testing.T) {
	src, head := sourceRepo(t)
	ctx := context.Background()
	r := openLocal(t, src.Path())

	files := map[string][]byte{
		"summary.yaml":                             []byte("ready: 2/3\n"),
		"objects/default/Deployment/web.yaml":      []byte("replicas: 3\nready: 2\n"),
		"objects/default/Deployment/api.yaml":      []byte("replicas: 1\nready: 0\n"),
		"objects/kube-system/DaemonSet/proxy.yaml": []byte("ready: 3\n"),
		"machines/m1.yaml":                         []byte("reachable: true\n"),
		"machines/m2.yaml":                         []byte("reachable: false\n"),
	}
	st := Status{Protected: "main", Files: files, Message: "status: " + head[:7] + " Progressing - 2/3 pods ready", Author: testAuthor}
	first, changed, err := r.WriteStatus(ctx, st)
	if err != nil || !changed {
		t.Fatalf("first WriteStatus = %s, %v, %v; want a commit", first, changed, err)
	}
	dir := src.Path()
	if got := gitCLI(t, dir, "rev-parse", "berth/status"); got != first {
		t.Fatalf("berth/status is %s, WriteStatus said %s", got, first)
	}
	if got := gitCLI(t, dir, "show", "berth/status:objects/default/Deployment/web.yaml"); got != "replicas: 3\nready: 2" {
		t.Errorf("git show web.yaml = %q", got)
	}
	if got := gitCLI(t, dir, "ls-tree", "-r", "--name-only", "berth/status"); got != strings.Join([]string{
		"machines/m1.yaml", "machines/m2.yaml", "objects/default/Deployment/api.yaml",
		"objects/default/Deployment/web.yaml", "objects/kube-system/DaemonSet/proxy.yaml", "summary.yaml"}, "\n") {
		t.Errorf("ls-tree:\n%s", got)
	}
	if got := gitCLI(t, dir, "log", "--format=%P|%an <%ae>|%s", "berth/status"); got != "|berth test <status@berth.dev>|status: "+head[:7]+" Progressing - 2/3 pods ready" {
		t.Errorf("status log = %q; want one parentless commit", got)
	}
	if got := gitCLI(t, dir, "rev-parse", "main"); got != head {
		t.Errorf("main moved to %s", got)
	}
	fsckClean(t, dir)

	// Same files: no commit.
	again, changed, err := r.WriteStatus(ctx, st)
	if err != nil || changed || again != first {
		t.Fatalf("unchanged WriteStatus = %s, %v, %v; want %s, false", again, changed, err, first)
	}

	// The api Deployment is pruned, web changes; machines/ is untouched
	// and keeps its tree object.
	delete(files, "objects/default/Deployment/api.yaml")
	files["objects/default/Deployment/web.yaml"] = []byte("replicas: 3\nready: 3\n")
	st.Message = "status: " + head[:7] + " Ready - 3/3 pods ready"
	second, changed, err := r.WriteStatus(ctx, st)
	if err != nil || !changed {
		t.Fatalf("second WriteStatus = %s, %v, %v", second, changed, err)
	}
	if got := gitCLI(t, dir, "rev-parse", second+"^"); got != first {
		t.Errorf("parent of second status commit = %s, want %s", got, first)
	}
	if got := gitCLI(t, dir, "diff", "--name-status", first, second); got != "D\tobjects/default/Deployment/api.yaml\nM\tobjects/default/Deployment/web.yaml" {
		t.Errorf("diff first..second:\n%s", got)
	}
	for _, sub := range []string{"machines", "objects/kube-system"} {
		if a, b := gitCLI(t, dir, "rev-parse", first+":"+sub), gitCLI(t, dir, "rev-parse", second+":"+sub); a != b {
			t.Errorf("unchanged %s rewritten: %s -> %s", sub, a, b)
		}
	}
	fsckClean(t, dir)

	// Removing the last file of a directory removes the directory.
	delete(files, "objects/kube-system/DaemonSet/proxy.yaml")
	st.Message = "status: pruned proxy"
	if _, _, err := r.WriteStatus(ctx, st); err != nil {
		t.Fatal(err)
	}
	if got := gitCLI(t, dir, "ls-tree", "--name-only", "berth/status:objects"); got != "default" {
		t.Errorf("objects/ after pruning kube-system = %q", got)
	}
	// The Repo sees its own commits (its object list is refreshed).
	if c, err := r.Resolve("berth/status"); err != nil || c.Subject != "status: pruned proxy" {
		t.Errorf("Resolve(berth/status) = %+v, %v", c, err)
	}
	fsckClean(t, dir)
}

func TestWriteStatusRefuses(t *testing.T) {
	src, head := sourceRepo(t)
	ctx := context.Background()
	r := openLocal(t, src.Path())
	ok := map[string][]byte{"a.yaml": []byte("x\n")}
	for name, tc := range map[string]struct {
		st   Status
		want error
	}{
		"watched branch":         {Status{Branch: "main", Protected: "main", Files: ok, Message: "m"}, ErrProtectedBranch},
		"watched branch by ref":  {Status{Branch: "refs/heads/main", Protected: "main", Files: ok, Message: "m"}, ErrProtectedBranch},
		"watched is the default": {Status{Protected: "refs/heads/berth/status", Files: ok, Message: "m"}, ErrProtectedBranch},
		"no message":             {Status{Files: ok}, nil},
		"bad branch":             {Status{Branch: "a..b", Files: ok, Message: "m"}, nil},
		"dotdot path":            {Status{Files: map[string][]byte{"../x": nil}, Message: "m"}, nil},
		"dot git path":           {Status{Files: map[string][]byte{"a/.GIT/config": nil}, Message: "m"}, nil},
		"absolute path":          {Status{Files: map[string][]byte{"/etc/passwd": nil}, Message: "m"}, nil},
		"file and dir":           {Status{Files: map[string][]byte{"a": nil, "a/b": nil}, Message: "m"}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := r.WriteStatus(ctx, tc.st)
			if err == nil {
				t.Fatal("WriteStatus succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if got := gitCLI(t, src.Path(), "for-each-ref", "--format=%(refname) %(objectname)"); got != "refs/heads/main "+head {
		t.Errorf("refs after refused writes:\n%s", got)
	}
}

func TestWriteStatusLockHeld(t *testing.T) {
	src, _ := sourceRepo(t)
	ctx := context.Background()
	r := openLocal(t, src.Path())
	// A git process holds the branch's lock (as git push does while it
	// updates the reference).
	lock := filepath.Join(src.Path(), "refs", "heads", "berth", "status.lock")
	if err := os.MkdirAll(filepath.Dir(lock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := r.WriteStatus(ctx, Status{Files: map[string][]byte{"a": []byte("1\n")}, Message: "m"})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "status.lock exists") {
		t.Fatalf("WriteStatus with the lock held: %v; want ErrConflict naming the lock", err)
	}
	if _, err := gitCLIErr(src.Path(), "rev-parse", "--verify", "-q", "berth/status"); err == nil {
		t.Error("berth/status was written despite the lock")
	}
	if _, err := os.Stat(lock); err != nil {
		t.Errorf("the other writer's lock was removed: %v", err)
	}
}

// Several writers, each with its own Repo on one bare repository, and git
// update-ref from the CLI, race on the status branch: every reported commit
// is in the history, nothing else is, and the repository stays consistent.
func TestWriteStatusRacingLocalWriters(t *testing.T) {
	src, _ := sourceRepo(t)
	ctx := context.Background()
	const writers, rounds = 4, 10
	var mu sync.Mutex
	var commits []string
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := Open(ctx, src.Path())
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			for i := 0; i < rounds; i++ {
				h, changed, err := r.WriteStatus(ctx, Status{
					Files:   map[string][]byte{"summary.yaml": fmt.Appendf(nil, "writer %d round %d\n", w, i)},
					Message: fmt.Sprintf("status: writer %d round %d", w, i),
				})
				if errors.Is(err, ErrConflict) {
					// Lost every retry: an honest failure, not a lost
					// write; the invariants below still hold.
					t.Logf("writer %d round %d: %v", w, i, err)
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, i, err)
					return
				}
				if changed {
					mu.Lock()
					commits = append(commits, h)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // git itself moves the branch to a commit of its own, with a CAS too
		defer wg.Done()
		for i := 0; i < rounds; i++ {
			old, err := gitCLIErr(src.Path(), "rev-parse", "-q", "--verify", "berth/status")
			if err != nil {
				continue
			}
			tree := gitCLI(t, src.Path(), "rev-parse", old+"^{tree}")
			c := gitCLI(t, src.Path(), "commit-tree", "-p", old, "-m", fmt.Sprintf("cli %d", i), tree)
			if _, err := gitCLIErr(src.Path(), "update-ref", "refs/heads/berth/status", c, old); err == nil {
				mu.Lock()
				commits = append(commits, c)
				mu.Unlock()
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	history := strings.Fields(gitCLI(t, src.Path(), "rev-list", "--first-parent", "berth/status"))
	inHistory := map[string]bool{}
	for _, h := range history {
		inHistory[h] = true
	}
	for _, c := range commits {
		if !inHistory[c] {
			t.Errorf("commit %s was reported written but is not in the status history", c)
		}
	}
	if len(history) != len(commits) {
		t.Errorf("history has %d commits, writers reported %d", len(history), len(commits))
	}
	fsckClean(t, src.Path())
}

// An in-memory clone writes status too (no disk, CheckAndSetReference).
func TestWriteStatusInMemoryClone(t *testing.T) {
	src, _ := sourceRepo(t)
	ctx := context.Background()
	r, err := Clone(ctx, CloneOptions{URL: src.URL()})
	if err != nil {
		t.Fatal(err)
	}
	h1, changed, err := r.WriteStatus(ctx, Status{Files: map[string][]byte{"a/b.yaml": []byte("1\n")}, Message: "one", Author: testAuthor})
	if err != nil || !changed {
		t.Fatalf("WriteStatus = %v, %v", changed, err)
	}
	h2, changed, err := r.WriteStatus(ctx, Status{Files: map[string][]byte{"a/b.yaml": []byte("1\n")}, Message: "two", Author: testAuthor})
	if err != nil || changed || h2 != h1 {
		t.Fatalf("unchanged WriteStatus = %s, %v, %v", h2, changed, err)
	}
	snap, err := r.Snapshot(ctx, "berth/status")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := readFile(snap.FS, "a/b.yaml"); err != nil || string(b) != "1\n" {
		t.Errorf("a/b.yaml = %q, %v", b, err)
	}
}

// BenchmarkWriteStatus writes a status of 1,000 objects on a bare
// repository, one object's file changing each time: the cost of a pass's
// status commit (only that object's directories are rewritten).
func BenchmarkWriteStatus(b *testing.B) {
	src := gittest.NewBare(b)
	src.Commit(map[string]string{"a": "a"}, "source")
	ctx := context.Background()
	r := openLocal(b, src.Path())
	files := map[string][]byte{}
	for i := 0; i < 1000; i++ {
		files[fmt.Sprintf("objects/ns%d/Deployment/app%d.yaml", i%20, i)] = fmt.Appendf(nil, "ready: %d\n", i)
	}
	st := Status{Files: files, Message: "status", Author: testAuthor}
	if _, _, err := r.WriteStatus(ctx, st); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		files["objects/ns3/Deployment/app3.yaml"] = fmt.Appendf(nil, "ready: %d\n", i)
		if _, changed, err := r.WriteStatus(ctx, st); err != nil || !changed {
			b.Fatalf("WriteStatus: %v, %v", changed, err)
		}
	}
}
