package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/internal/syncbuf"
	"berth.dev/berth/internal/testenv"
)

// waitFor bounds how long a test waits for an event before failing; it is
// a failure bound, not a speed target (see BenchmarkPushToEvent).
const waitFor = 10 * time.Second

func gitCLI(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=CLI", "-c", "user.email=cli@berth.dev"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// lab is a bare repository and a clone of it to push from, both made by
// git itself.
type lab struct {
	t     testing.TB
	bare  string
	clone string
}

func newLab(t testing.TB) *lab {
	t.Helper()
	testenv.Require(t, "git")
	dir := t.TempDir()
	l := &lab{t: t, bare: filepath.Join(dir, "repo.git"), clone: filepath.Join(dir, "work")}
	gitCLI(t, dir, "init", "-q", "--bare", "-b", "main", l.bare)
	gitCLI(t, dir, "clone", "-q", l.bare, l.clone)
	gitCLI(t, l.clone, "checkout", "-q", "-b", "main")
	return l
}

// commit makes an empty commit on the clone's current branch.
func (l *lab) commit(msg string) string {
	l.t.Helper()
	gitCLI(l.t, l.clone, "commit", "-q", "--allow-empty", "-m", msg)
	return gitCLI(l.t, l.clone, "rev-parse", "HEAD")
}

func (l *lab) push(args ...string) {
	l.t.Helper()
	gitCLI(l.t, l.clone, append([]string{"push", "-q", "origin"}, args...)...)
}

func start(t testing.TB, opts Options) *Watcher {
	t.Helper()
	w, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-w.ready:
	case err := <-done:
		t.Fatalf("Run ended before watching: %v", err)
	}
	return w
}

func next(t testing.TB, w *Watcher) Event {
	t.Helper()
	select {
	case ev := <-w.Events():
		return ev
	case <-time.After(waitFor):
		t.Fatalf("no event within %s", waitFor)
		return Event{}
	}
}

// expect waits for the event reporting commit, failing on any other.
func expect(t testing.TB, w *Watcher, branch, commit, source string) {
	t.Helper()
	ev := next(t, w)
	if want := (Event{Branch: branch, Commit: commit, Source: source}); ev != want {
		t.Fatalf("event %+v, want %+v", ev, want)
	}
}

func quiet(t testing.TB, w *Watcher, d time.Duration) {
	t.Helper()
	select {
	case ev := <-w.Events():
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

func TestWatchLocalPush(t *testing.T) {
	l := newLab(t)
	c1 := l.commit("one")
	l.push("main")
	w := start(t, Options{Branch: "main", Dir: l.bare, Since: c1, Interval: time.Hour})
	c2 := l.commit("two")
	l.push("main")
	expect(t, w, "main", c2, SourceFSNotify)

	// Another branch moving says nothing about main.
	l.push("HEAD:refs/heads/other")
	quiet(t, w, 300*time.Millisecond)
}

// A branch in a directory that does not exist when the watch starts: the
// new directory is watched as it appears.
func TestWatchNestedBranchCreated(t *testing.T) {
	l := newLab(t)
	l.commit("one")
	l.push("main")
	w := start(t, Options{Branch: "team/app/prod", Dir: l.bare, Interval: time.Hour})
	quiet(t, w, 200*time.Millisecond)
	c := l.commit("two")
	l.push("HEAD:refs/heads/team/app/prod")
	expect(t, w, "team/app/prod", c, SourceFSNotify)
	c = l.commit("three")
	l.push("HEAD:refs/heads/team/app/prod")
	expect(t, w, "team/app/prod", c, SourceFSNotify)
}

func TestWatchDeletedAndRecreated(t *testing.T) {
	l := newLab(t)
	c1 := l.commit("one")
	l.push("main", "HEAD:refs/heads/team/app")
	w := start(t, Options{Branch: "team/app", Dir: l.bare, Since: c1, Interval: time.Hour})
	l.push(":refs/heads/team/app")
	expect(t, w, "team/app", "", SourceFSNotify)
	if _, err := os.Stat(filepath.Join(l.bare, "refs", "heads", "team")); !errors.Is(err, os.ErrNotExist) {
		t.Logf("git kept the empty directory refs/heads/team (%v)", err)
	}
	c2 := l.commit("two")
	l.push("HEAD:refs/heads/team/app")
	expect(t, w, "team/app", c2, SourceFSNotify)
}

func TestWatchPackedRefs(t *testing.T) {
	l := newLab(t)
	c1 := l.commit("one")
	l.push("main")
	w := start(t, Options{Branch: "main", Dir: l.bare, Since: c1, Interval: time.Hour})
	// Packing moves the branch out of its loose file: same commit, no event.
	gitCLI(t, l.bare, "pack-refs", "--all", "--prune")
	if _, err := os.Stat(filepath.Join(l.bare, "refs", "heads", "main")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("main still loose after pack-refs: %v", err)
	}
	quiet(t, w, 300*time.Millisecond)

	// The branch changes inside packed-refs only, replaced by a rename as
	// git does it.
	c2 := l.commit("two")
	l.push("HEAD:refs/heads/carrier") // brings the objects
	gitCLI(t, l.bare, "pack-refs", "--all", "--prune")
	quiet(t, w, 300*time.Millisecond)
	packed, err := os.ReadFile(filepath.Join(l.bare, "packed-refs"))
	if err != nil {
		t.Fatal(err)
	}
	rewritten := strings.Replace(string(packed), c1+" refs/heads/main", c2+" refs/heads/main", 1)
	if rewritten == string(packed) {
		t.Fatalf("main not in packed-refs:\n%s", packed)
	}
	tmp := filepath.Join(l.bare, "packed-refs.lock")
	if err := os.WriteFile(tmp, []byte(rewritten), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(l.bare, "packed-refs")); err != nil {
		t.Fatal(err)
	}
	expect(t, w, "main", c2, SourceFSNotify)
	if got := gitCLI(t, l.bare, "rev-parse", "main"); got != c2 {
		t.Fatalf("git reads main as %s", got)
	}

	// A push over a packed branch writes a loose file again.
	c3 := l.commit("three")
	l.push("main")
	expect(t, w, "main", c3, SourceFSNotify)
}

// A burst of reference updates, written the way receive-pack writes them
// (lock file, then rename), is one look and one event with the last hash
// (more only if the burst outlasts the debounce, on a loaded machine).
func TestWatchDebounceBurst(t *testing.T) {
	l := newLab(t)
	c1 := l.commit("c0")
	l.push("main")
	var commits []string
	for i := 1; i <= 10; i++ {
		commits = append(commits, l.commit(fmt.Sprint("c", i)))
	}
	l.push("HEAD:refs/heads/carrier")
	w := start(t, Options{Branch: "main", Dir: l.bare, Since: c1, Interval: time.Hour})
	ref := filepath.Join(l.bare, "refs", "heads", "main")
	burst(t, w, DefaultDebounce, commits[9], func() {
		for _, c := range commits {
			if err := os.WriteFile(ref+".lock", []byte(c+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(ref+".lock", ref); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// Ten real pushes in a row give fewer events than pushes (unless each push
// takes longer than the debounce), the last one with the last commit.
func TestWatchDebounceTenPushes(t *testing.T) {
	l := newLab(t)
	c0 := l.commit("c0")
	l.push("main")
	var commits []string
	for i := 1; i <= 10; i++ {
		commits = append(commits, l.commit(fmt.Sprint("c", i)))
	}
	const debounce = time.Second
	w := start(t, Options{Branch: "main", Dir: l.bare, Since: c0, Interval: time.Hour, Debounce: debounce})
	burst(t, w, debounce, commits[9], func() {
		for _, c := range commits {
			l.push(c + ":refs/heads/main")
		}
	})
}

// burst runs update while collecting w's events until one reports last,
// then checks that nothing follows and that there was at most one event
// per debounce window the burst lasted.
func burst(t *testing.T, w *Watcher, debounce time.Duration, last string, update func()) {
	t.Helper()
	events := make(chan Event, 100)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case ev := <-w.Events():
				events <- ev
			case <-stop:
				return
			}
		}
	}()
	t0 := time.Now()
	update()
	took := time.Since(t0)
	var got []Event
	for len(got) == 0 || got[len(got)-1].Commit != last {
		select {
		case ev := <-events:
			if ev.Source != SourceFSNotify {
				t.Fatalf("event from %s: %+v", ev.Source, ev)
			}
			got = append(got, ev)
		case <-time.After(waitFor):
			t.Fatalf("last commit never reported; events %+v", got)
		}
	}
	select {
	case ev := <-events:
		t.Fatalf("event after the last commit: %+v", ev)
	case <-time.After(debounce + 200*time.Millisecond):
	}
	// The first ref update of a burst is looked at at once, the rest once
	// per debounce window.
	windows := int(took/debounce) + 1
	t.Logf("burst of %s: %d events", took.Round(time.Millisecond), len(got))
	if len(got) > windows+1 {
		t.Fatalf("burst of %s gave %d events, more than one at its start and one per each of its %d debounce windows", took, len(got), windows)
	}
}

// A consumer that is busy gets only the latest commit.
func TestWatchCoalescesForBusyConsumer(t *testing.T) {
	var mu sync.Mutex
	current := ""
	looked := make(chan struct{}, 1) // a look signals here as it returns
	resolve := func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		defer func() { looked <- struct{}{} }()
		return current, nil
	}
	w := start(t, Options{Branch: "main", Resolve: resolve, Interval: time.Hour})
	<-looked // the look at start
	set := func(h string) {
		mu.Lock()
		current = h
		mu.Unlock()
		w.Nudge()
		<-looked
	}
	set(strings.Repeat("a", 40))
	set(strings.Repeat("b", 40))
	set(strings.Repeat("c", 40))
	set(strings.Repeat("c", 40)) // this look follows the send of "c"
	expect(t, w, "main", strings.Repeat("c", 40), SourceWebhook)
	select {
	case ev := <-w.Events():
		t.Fatalf("older event after the latest: %+v", ev)
	default:
	}
}

// With fsnotify off, the poll alone notices a push.
func TestWatchPollBackstop(t *testing.T) {
	l := newLab(t)
	c1 := l.commit("one")
	l.push("main")
	w := start(t, Options{Branch: "main", Dir: l.bare, Since: c1, DisableFSNotify: true, Interval: 50 * time.Millisecond})
	c2 := l.commit("two")
	l.push("main")
	expect(t, w, "main", c2, SourcePoll)
}

// At start the watcher reports the branch when the caller has another
// commit, and nothing when it has the same.
func TestWatchStart(t *testing.T) {
	l := newLab(t)
	c1 := l.commit("one")
	l.push("main")
	w := start(t, Options{Branch: "main", Dir: l.bare, Interval: time.Hour})
	expect(t, w, "main", c1, SourcePoll)
	w = start(t, Options{Branch: "main", Dir: l.bare, Since: c1, Interval: time.Hour})
	quiet(t, w, 200*time.Millisecond)
}

// A remote repository: the resolver fetches with gitsource; the poll and a
// webhook nudge both notice a push.
func TestWatchRemote(t *testing.T) {
	l := newLab(t)
	c1 := l.commit("one")
	l.push("main")
	ctx := context.Background()
	repo, err := gitsource.Clone(ctx, gitsource.CloneOptions{URL: "file://" + l.bare, Branch: "main"})
	if err != nil {
		t.Fatal(err)
	}
	resolve := func(ctx context.Context) (string, error) {
		if err := repo.Fetch(ctx); err != nil {
			return "", err
		}
		c, err := repo.Resolve("main")
		if errors.Is(err, gitsource.ErrUnknownRevision) {
			return "", nil
		}
		return c.Hash, err
	}
	polled := start(t, Options{Branch: "main", Resolve: resolve, Since: c1, Interval: 100 * time.Millisecond})
	c2 := l.commit("two")
	l.push("main")
	expect(t, polled, "main", c2, SourcePoll)

	nudged := start(t, Options{Branch: "main", Resolve: resolve, Since: c2, Interval: time.Hour})
	c3 := l.commit("three")
	l.push("main")
	quiet(t, nudged, 200*time.Millisecond)
	nudged.Nudge()
	expect(t, nudged, "main", c3, SourceWebhook)
}

func TestOptionsValidate(t *testing.T) {
	r := func(context.Context) (string, error) { return "", nil }
	for _, o := range []Options{
		{Branch: "", Resolve: r},
		{Branch: "a..b", Resolve: r},
		{Branch: "main"},
		{Branch: "main", Resolve: r, Interval: -1},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
	}
	if _, err := New(Options{Branch: "main", Dir: t.TempDir()}); err == nil {
		t.Error("New on a directory without a repository succeeded")
	}
}

func TestReadRef(t *testing.T) {
	dir := t.TempDir()
	h1, h2 := strings.Repeat("1", 40), strings.Repeat("2", 40)
	write := func(name, content string) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("packed-refs", "# pack-refs with: peeled fully-peeled sorted\n"+h1+" refs/heads/main\n"+h2+" refs/tags/v1\n^"+h1+"\n")
	write("refs/heads/loose", h2+"\n")
	write("refs/heads/sym", "ref: refs/heads/loose\n")
	write("refs/heads/empty", "")
	write("refs/heads/loop", "ref: refs/heads/loop\n")
	for ref, want := range map[string]string{
		"refs/heads/main":    h1,
		"refs/heads/loose":   h2,
		"refs/heads/sym":     h2,
		"refs/heads/missing": "",
		"refs/heads/main/x":  "", // main is a file: nothing below it
	} {
		if got, err := readRef(dir, ref); err != nil || got != want {
			t.Errorf("readRef(%s) = %q, %v; want %q", ref, got, err, want)
		}
	}
	for _, ref := range []string{"refs/heads/empty", "refs/heads/loop"} {
		if got, err := readRef(dir, ref); err == nil {
			t.Errorf("readRef(%s) = %q, want an error", ref, got)
		}
	}
}

// BenchmarkPushToEvent times a git push into a watched bare repository
// until the watcher reports its commit, with the default debounce. It
// reports the median and 90th percentile (p50-ns, p90-ns), the median time
// of the push itself (push-ns) and of the wait after it returned
// (after-push-ns).
func BenchmarkPushToEvent(b *testing.B) {
	l := newLab(b)
	c := l.commit("c0")
	l.push("main")
	w := start(b, Options{Branch: "main", Dir: l.bare, Since: c, Interval: time.Hour})
	var lat, push, after []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c = l.commit(fmt.Sprint("c", i+1))
		b.StartTimer()
		t0 := time.Now()
		l.push("main")
		push = append(push, time.Since(t0))
		for {
			ev := next(b, w)
			if ev.Commit == c {
				break
			}
		}
		lat = append(lat, time.Since(t0))
		after = append(after, lat[len(lat)-1]-push[len(push)-1])
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(lat, 50)), "p50-ns")
	b.ReportMetric(float64(percentile(lat, 90)), "p90-ns")
	b.ReportMetric(float64(percentile(push, 50)), "push-ns")
	b.ReportMetric(float64(percentile(after, 50)), "after-push-ns")
}

func percentile(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100]
}

// A resolver that fails is logged once until it works again, and the
// watcher keeps polling through it.
func TestWatchResolveFailures(t *testing.T) {
	var mu sync.Mutex
	fail := true
	h := strings.Repeat("a", 40)
	resolve := func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return "", errors.New("remote unreachable")
		}
		return h, nil
	}
	var logs syncbuf.Buffer
	w := start(t, Options{Branch: "main", Resolve: resolve, Interval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	quiet(t, w, 200*time.Millisecond)
	mu.Lock()
	fail = false
	mu.Unlock()
	expect(t, w, "main", h, SourcePoll)
	out := logs.String()
	if n := strings.Count(out, "look at branch failed"); n != 1 {
		t.Errorf("%d failure lines at info level, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "works again") {
		t.Errorf("no recovery line:\n%s", out)
	}
}
