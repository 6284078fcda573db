package gitsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// statusWriter is what berth serve does after a pass: write status and the
// note on a clone, push, rebuild on conflict.
type statusWriter struct {
	r      *Repo
	name   string
	source string // commit the note goes on
	files  map[string][]byte
	builds int
}

func (w *statusWriter) build(ctx context.Context) error {
	w.builds++
	if _, _, err := w.r.WriteStatus(ctx, Status{Protected: "main", Files: w.files, Message: "status: " + w.name, Author: testAuthor}); err != nil {
		return err
	}
	_, err := w.r.AddNote(ctx, "", w.source, "reconciled by "+w.name, testAuthor)
	return err
}

func (w *statusWriter) publish(ctx context.Context, opts PushOptions) error {
	if err := w.build(ctx); err != nil {
		return err
	}
	return w.r.Push(ctx, opts, w.build)
}

func fastRetries() PushOptions { return PushOptions{Backoff: time.Millisecond, Attempts: 10} }

// A writer that cloned before another pushed loses the race: its push is
// refused, it fetches, rebuilds on the winner's commit and pushes; both
// notes survive.
func TestPushConflictRebuilds(t *testing.T) {
	src, head := sourceRepo(t)
	second := src.Commit(map[string]string{"apps/api.yaml": "kind: Deployment\n"}, "add api")
	ctx := context.Background()
	clone := func(name, source string) *statusWriter {
		r, err := Clone(ctx, CloneOptions{URL: src.URL()})
		if err != nil {
			t.Fatal(err)
		}
		return &statusWriter{r: r, name: name, source: source, files: map[string][]byte{"summary.yaml": []byte(name + "\n")}}
	}
	a, b := clone("a", head), clone("b", second)

	if err := a.publish(ctx, fastRetries()); err != nil {
		t.Fatal(err)
	}
	aTip := gitCLI(t, src.Path(), "rev-parse", "berth/status")
	var logs bytes.Buffer
	opts := fastRetries()
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	if err := b.publish(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if b.builds != 2 || !strings.Contains(logs.String(), "lost a race") {
		t.Errorf("b built %d times (want 2: first try, rebuild after the conflict); log:\n%s", b.builds, logs.String())
	}
	dir := src.Path()
	if got := gitCLI(t, dir, "log", "--format=%s", "berth/status"); got != "status: b\nstatus: a" {
		t.Errorf("status history:\n%s", got)
	}
	if got := gitCLI(t, dir, "rev-parse", "berth/status^"); got != aTip {
		t.Errorf("b's status commit is not on top of a's")
	}
	if got := gitCLI(t, dir, "show", "berth/status:summary.yaml"); got != "b" {
		t.Errorf("summary = %q", got)
	}
	if got := gitCLI(t, dir, "log", "--notes=berth", "--format=%s: %N", "main"); got != "add api: reconciled by b\n\nadd web: reconciled by a" {
		t.Errorf("git log --notes=berth:\n%s", got)
	}
	fsckClean(t, dir)

	// Nothing changed: the push is a no-op.
	if err := b.publish(ctx, fastRetries()); err != nil {
		t.Fatal(err)
	}
	if got := gitCLI(t, dir, "rev-list", "--count", "berth/status"); got != "2" {
		t.Errorf("status history has %s commits after an unchanged pass", got)
	}
}

// Two writers on their own clones push to one bare repository as fast as
// they can: every push ends in the history, no note is lost.
func TestPushRacingWriters(t *testing.T) {
	src, _ := sourceRepo(t)
	const rounds = 8
	var sources []string
	for i := 0; i < 2*rounds; i++ {
		sources = append(sources, src.Commit(map[string]string{"n": fmt.Sprint(i)}, fmt.Sprint("c", i)))
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	var rebuilds [2]int
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := Clone(ctx, CloneOptions{URL: src.URL(), CacheDir: t.TempDir()})
			if err != nil {
				errs <- err
				return
			}
			defer r.Close()
			for i := 0; i < rounds; i++ {
				sw := &statusWriter{r: r, name: fmt.Sprintf("w%d-%d", w, i), source: sources[2*i+w],
					files: map[string][]byte{fmt.Sprintf("writers/w%d.yaml", w): fmt.Appendf(nil, "round %d\n", i)}}
				opts := fastRetries()
				opts.Attempts = 50
				if err := sw.publish(ctx, opts); err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, i, err)
					return
				}
				rebuilds[w] += sw.builds - 1
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	dir := src.Path()
	notes := strings.Split(gitCLI(t, dir, "notes", "--ref=berth", "list"), "\n")
	if len(notes) != 2*rounds {
		t.Errorf("%d notes survived, want %d:\n%s", len(notes), 2*rounds, strings.Join(notes, "\n"))
	}
	for i, c := range sources {
		want := fmt.Sprintf("reconciled by w%d-%d", i%2, i/2)
		if got := gitCLI(t, dir, "notes", "--ref=berth", "show", c); got != want {
			t.Errorf("note of %s = %q, want %q", c[:7], got, want)
		}
	}
	// Status is regenerated, not merged: the tree is the last push's, and
	// every push is one commit of the history.
	last := gitCLI(t, dir, "log", "-1", "--format=%s", "berth/status")
	w := strings.TrimSuffix(strings.TrimPrefix(last, "status: "), fmt.Sprint("-", rounds-1))
	if got := gitCLI(t, dir, "ls-tree", "-r", "--name-only", "berth/status"); got != "writers/"+w+".yaml" {
		t.Errorf("last push %q left the tree %q", last, got)
	}
	subjects := strings.Split(gitCLI(t, dir, "log", "--first-parent", "--format=%s", "berth/status"), "\n")
	seen := map[string]bool{}
	for _, s := range subjects {
		seen[s] = true
	}
	for i := 0; i < 2*rounds; i++ {
		if s := fmt.Sprintf("status: w%d-%d", i%2, i/2); !seen[s] {
			t.Errorf("push %q missing from the status history", s)
		}
	}
	if len(subjects) != 2*rounds {
		t.Errorf("status history has %d commits, want %d", len(subjects), 2*rounds)
	}
	t.Logf("rebuilds after conflicts: %v", rebuilds)
	fsckClean(t, dir)
}

// When every retry loses again, Push stops after Attempts with ErrConflict.
// The other writer here is git itself, pushing from a clone.
func TestPushGivesUp(t *testing.T) {
	src, head := sourceRepo(t)
	ctx := context.Background()
	cli := t.TempDir()
	gitCLI(t, cli, "clone", "-q", src.Path(), ".")
	r, err := Clone(ctx, CloneOptions{URL: src.URL()})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	interfere := func() {
		n++
		gitCLI(t, cli, "checkout", "-q", "-B", "berth/status")
		gitCLI(t, cli, "commit", "-q", "--allow-empty", "-m", fmt.Sprint("cli ", n))
		gitCLI(t, cli, "push", "-q", "-f", "origin", "berth/status")
	}
	w := &statusWriter{r: r, name: "loser", source: head, files: map[string][]byte{"s": []byte("x\n")}}
	rebuild := func(ctx context.Context) error {
		if err := w.build(ctx); err != nil {
			return err
		}
		interfere()
		return nil
	}
	if err := rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	opts := fastRetries()
	opts.Attempts = 3
	err = r.Push(ctx, opts, rebuild)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Push = %v, want ErrConflict", err)
	}
	if w.builds != 3 {
		t.Errorf("built %d times, want 3", w.builds)
	}
	if got := gitCLI(t, src.Path(), "log", "-1", "--format=%s", "berth/status"); got != "cli 3" {
		t.Errorf("status tip = %q, want git's last commit", got)
	}
	// The notes ref is pushed only with the branch (atomic push): absent.
	if _, err := gitCLIErr(src.Path(), "rev-parse", "-q", "--verify", DefaultNotesRef); err == nil {
		t.Errorf("notes were pushed although the atomic push failed")
	}
}

func TestPushErrors(t *testing.T) {
	src, _ := sourceRepo(t)
	ctx := context.Background()
	local := openLocal(t, src.Path())
	never := func(context.Context) error { t.Error("rebuild called"); return nil }
	if err := local.Push(ctx, PushOptions{}, never); err == nil {
		t.Error("push from a local repository without a url succeeded")
	}
	r, err := Clone(ctx, CloneOptions{URL: src.URL()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.WriteStatus(ctx, Status{Files: map[string][]byte{"s": nil}, Message: "m"}); err != nil {
		t.Fatal(err)
	}
	err = r.Push(ctx, PushOptions{URL: "file://" + t.TempDir() + "/missing.git"}, never)
	if err == nil || errors.Is(err, ErrConflict) {
		t.Errorf("push to a missing repository = %v, want a plain error", err)
	}
	for _, o := range []PushOptions{
		{Attempts: -1}, {Backoff: -time.Second}, {Refs: []string{"berth/status"}},
		{URL: "http://example.invalid/x"}, {URL: "/x", SSHKeyPath: "/k"},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
	}
	if err := r.Push(ctx, PushOptions{}, nil); err == nil {
		t.Error("push without a rebuild function succeeded")
	}
	// A local path works as a URL.
	if err := r.Push(ctx, PushOptions{URL: src.Path()}, never); err != nil {
		t.Fatal(err)
	}
	if _, err := gitCLIErr(src.Path(), "rev-parse", "-q", "--verify", "berth/status"); err != nil {
		t.Error("berth/status not pushed to a local path")
	}
}
