package agentclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/nodes/agent/httpapi"
	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
)

// fakeBackend is an agent without containers: it keeps the desired set it
// is given, replays and streams events, serves logs from memory and runs
// exec sessions with a function.
type fakeBackend struct {
	mu      sync.Mutex
	calls   int
	desired api.DesiredPods
	network api.Network
	pods    []api.PodStatus
	node    api.NodeInfo
	err     error // every call fails with it when set

	events []api.Event
	live   chan api.Event // followers get these

	logs      string
	logOpts   api.LogOptions
	logFollow func(ctx context.Context, w io.Writer) error
	logsDone  chan error // the ctx error Logs saw when it returned

	exec func(ctx context.Context, req api.ExecRequest) (int, error)

	// importFn reads an archive; by default the whole of it, answering
	// one image per KiB read.
	importFn func(ctx context.Context, r io.Reader) ([]api.Image, error)
}

func (f *fakeBackend) call() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.err
}

func (f *fakeBackend) SetPods(_ context.Context, pods api.DesiredPods) error {
	if err := f.call(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if pods.Generation < f.desired.Generation {
		return fmt.Errorf("generation %d is older than %d: %w", pods.Generation, f.desired.Generation, api.ErrConflict)
	}
	f.desired = pods
	return nil
}

func (f *fakeBackend) SetNetwork(_ context.Context, n api.Network) error {
	if err := f.call(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if n.Generation < f.network.Generation {
		return fmt.Errorf("network generation %d is older than %d: %w", n.Generation, f.network.Generation, api.ErrConflict)
	}
	f.network = n
	return nil
}

func (f *fakeBackend) Network(context.Context) (api.Network, error) {
	if err := f.call(); err != nil {
		return api.Network{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.network, nil
}

func (f *fakeBackend) Pods(context.Context) ([]api.PodStatus, error) {
	if err := f.call(); err != nil {
		return nil, err
	}
	return f.pods, nil
}

func (f *fakeBackend) Node(context.Context) (api.NodeInfo, error) {
	if err := f.call(); err != nil {
		return api.NodeInfo{}, err
	}
	return f.node, nil
}

func (f *fakeBackend) Events(ctx context.Context, since time.Time, follow bool) (<-chan api.Event, error) {
	if err := f.call(); err != nil {
		return nil, err
	}
	ch := make(chan api.Event)
	go func() {
		defer close(ch)
		for _, ev := range f.events {
			if ev.Time.Before(since) {
				continue
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
		for follow {
			select {
			case ev := <-f.live:
				select {
				case ch <- ev:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

func (f *fakeBackend) Logs(ctx context.Context, pod string, opts api.LogOptions, w io.Writer) error {
	if err := f.call(); err != nil {
		return err
	}
	if pod != "default/web" {
		return fmt.Errorf("pod %s: %w", pod, api.ErrNotFound)
	}
	f.mu.Lock()
	f.logOpts = opts
	f.mu.Unlock()
	if _, err := io.WriteString(w, f.logs); err != nil {
		return err
	}
	if opts.Follow && f.logFollow != nil {
		err := f.logFollow(ctx, w)
		f.logsDone <- ctx.Err()
		return err
	}
	return nil
}

func (f *fakeBackend) Exec(ctx context.Context, req api.ExecRequest) (int, error) {
	if err := f.call(); err != nil {
		return -1, err
	}
	return f.exec(ctx, req)
}

func (f *fakeBackend) ImportImages(ctx context.Context, r io.Reader) ([]api.Image, error) {
	if err := f.call(); err != nil {
		return nil, err
	}
	if f.importFn != nil {
		return f.importFn(ctx, r)
	}
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return nil, err
	}
	var imgs []api.Image
	for i := range n / 1024 {
		imgs = append(imgs, api.Image{Ref: fmt.Sprintf("berth/img:%d", i), ID: fmt.Sprintf("sha256:%064d", i)})
	}
	return imgs, nil
}

// startAgent serves b on a unix socket and returns a client of it.
func startAgent(t testing.TB, b httpapi.Backend, opts agentclient.Options) (*agentclient.Client, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-agentclient")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	l, err := httpapi.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- httpapi.Serve(ctx, l, httpapi.NewHandler(b, httpapi.Options{Version: "1.2.3"})) }()
	c := agentclient.New(agentclient.DialUnix(sock), opts)
	t.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return c, sock
}

func testPod(name string) api.Pod {
	return api.Pod{
		Namespace: "default", Name: name, UID: "uid-" + name, Hash: "h1",
		Spec: api.PodSpec{
			Containers: []corev1.Container{{
				Name: "web", Image: "berth/echo:1",
				Env: []corev1.EnvVar{{Name: "DB_PASSWORD", Value: "hunter2"}},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceMemory: resource.MustParse("64Mi"),
				}},
			}},
			RestartPolicy:    corev1.RestartPolicyAlways,
			ImagePullSecrets: []api.Sensitive{api.Sensitive(`{"auths":{}}`)},
			Volumes: []api.Volume{{Name: "cfg", Files: &api.FilesVolume{Secret: true,
				Files: []api.File{{Path: "key", Content: []byte{0, 1, 2, 255}, Mode: 0o400}}}}},
		},
	}
}

func TestSetPodsAndReads(t *testing.T) {
	started := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	b := &fakeBackend{
		pods: []api.PodStatus{{Namespace: "default", Name: "web", Phase: corev1.PodRunning, Ready: true,
			StartedAt: started, ContainerStatuses: []api.ContainerStatus{{Name: "web", RestartCount: 2,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}},
		node: api.NodeInfo{Name: "lab1", APIVersion: api.Version, StartedAt: started,
			Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}},
	}
	c, _ := startAgent(t, b, agentclient.Options{})
	ctx := context.Background()

	desired := api.DesiredPods{Generation: 3, Pods: []api.Pod{testPod("web"), testPod("db")}}
	if err := c.SetPods(ctx, desired); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(desired, b.desired); diff != "" {
		t.Errorf("the agent got another set (-sent +got):\n%s", diff)
	}
	// Repeating is safe; an older generation is a conflict.
	if err := c.SetPods(ctx, desired); err != nil {
		t.Errorf("repeat: %v", err)
	}
	if err := c.SetPods(ctx, api.DesiredPods{Generation: 2, Pods: []api.Pod{}}); !errors.Is(err, api.ErrConflict) {
		t.Errorf("older generation: %v, want ErrConflict", err)
	}

	pods, err := c.Pods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b.pods, pods); diff != "" {
		t.Errorf("pods (-agent +client):\n%s", diff)
	}
	node, err := c.Node(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if node.Name != "lab1" || !node.StartedAt.Equal(started) || node.Capacity.Cpu().Value() != 2 {
		t.Errorf("node %+v", node)
	}
	v, err := c.Version(ctx)
	if err != nil || v != (agentclient.VersionInfo{Version: "1.2.3", APIVersion: api.Version}) {
		t.Errorf("version %+v, %v", v, err)
	}
}

// The agent's error kinds come back as the sentinels, on every call.
func TestErrorsComeBackAsSentinels(t *testing.T) {
	for _, sentinel := range []error{api.ErrNotFound, api.ErrConflict, api.ErrUnavailable, api.ErrInvalid, api.ErrInternal} {
		b := &fakeBackend{err: fmt.Errorf("containerd says: %w", sentinel)}
		c, _ := startAgent(t, b, agentclient.Options{})
		ctx := context.Background()
		calls := map[string]error{}
		calls["SetPods"] = c.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: []api.Pod{}})
		_, calls["Pods"] = c.Pods(ctx)
		_, calls["Node"] = c.Node(ctx)
		calls["Logs"] = c.Logs(ctx, "default/web", api.LogOptions{}, io.Discard)
		_, calls["Exec"] = c.Exec(ctx, api.ExecRequest{Pod: "default/web", Command: []string{"true"}})
		_, calls["ImportImages"] = c.ImportImages(ctx, strings.NewReader("archive"))
		for _, err := range c.Events(ctx, time.Time{}, false) {
			calls["Events"] = err
		}
		for name, err := range calls {
			if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), "containerd says") {
				t.Errorf("%s with %v: got %v", name, sentinel, err)
			}
		}
	}
}

// Calls the agent would refuse are refused before they are sent.
func TestClientRefusesMalformedCalls(t *testing.T) {
	b := &fakeBackend{}
	c, _ := startAgent(t, b, agentclient.Options{})
	ctx := context.Background()
	for _, pod := range []string{"web", "/web", "default/", "a/b/c"} {
		if err := c.Logs(ctx, pod, api.LogOptions{}, io.Discard); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("logs of %q: %v", pod, err)
		}
	}
	if _, err := c.Exec(ctx, api.ExecRequest{Pod: "default/web"}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("exec without command: %v", err)
	}
	if n := b.callCount(); n != 0 {
		t.Errorf("the agent saw %d calls", n)
	}
}

func TestUnreachableAgentIsUnavailable(t *testing.T) {
	c := agentclient.New(agentclient.DialUnix(filepath.Join(t.TempDir(), "none.sock")), agentclient.Options{})
	defer c.Close()
	ctx := context.Background()
	_, err := c.Pods(ctx)
	if !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("pods: %v, want ErrUnavailable", err)
	}
	if err := c.SetPods(ctx, api.DesiredPods{Pods: []api.Pod{}}); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("set pods: %v", err)
	}
	if _, err := c.Exec(ctx, api.ExecRequest{Pod: "a/b", Command: []string{"x"}}); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("exec: %v", err)
	}
	// A cancelled call is the caller's doing, not the agent's.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Pods(cctx); !errors.Is(err, context.Canceled) || errors.Is(err, api.ErrUnavailable) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestEvents(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	b := &fakeBackend{
		events: []api.Event{
			{Time: t0, Type: api.EventNormal, Reason: "Pulled", Pod: "default/web"},
			{Time: t0.Add(time.Minute), Type: api.EventNormal, Reason: "Started", Pod: "default/web", Container: "web"},
		},
		live: make(chan api.Event),
	}
	c, _ := startAgent(t, b, agentclient.Options{})

	var got []string
	for ev, err := range c.Events(context.Background(), t0.Add(time.Second), false) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Reason)
	}
	if fmt.Sprint(got) != "[Started]" {
		t.Errorf("since filter: %v", got)
	}

	// Following: recorded events, then live ones as they happen.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next := make(chan api.Event)
	go func() {
		defer close(next)
		for ev, err := range c.Events(ctx, time.Time{}, true) {
			if err != nil {
				t.Errorf("follow: %v", err)
				return
			}
			next <- ev
		}
	}()
	for _, want := range []string{"Pulled", "Started"} {
		if ev := <-next; ev.Reason != want {
			t.Errorf("got %s, want %s", ev.Reason, want)
		}
	}
	for _, reason := range []string{"Unhealthy", "Killing"} {
		b.live <- api.Event{Time: time.Now(), Type: api.EventWarning, Reason: reason}
		select {
		case ev := <-next:
			if ev.Reason != reason {
				t.Errorf("live: got %s, want %s", ev.Reason, reason)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("live event %s not delivered (not flushed?)", reason)
		}
	}
	cancel()
	select {
	case _, ok := <-next:
		if ok {
			t.Errorf("event after cancel")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the sequence did not stop when ctx ended")
	}
}

// A followed stream that the agent ends (it is shutting down) is an
// error the controller can act on: reconnect.
func TestEventsFollowAgentGoesAway(t *testing.T) {
	b := &fakeBackend{live: make(chan api.Event)}
	dir, _ := os.MkdirTemp("", "berth-agentclient")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	l, err := httpapi.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stopAgent := context.WithCancel(context.Background())
	defer stopAgent()
	served := make(chan error, 1)
	go func() { served <- httpapi.Serve(ctx, l, httpapi.NewHandler(b, httpapi.Options{})) }()
	c := agentclient.New(agentclient.DialUnix(sock), agentclient.Options{})
	defer c.Close()

	go func() { b.live <- api.Event{Reason: "Started"} }()
	var last error
	for ev, err := range c.Events(context.Background(), time.Time{}, true) {
		if err != nil {
			last = err
			break
		}
		if ev.Reason != "Started" {
			t.Fatalf("event %+v", ev)
		}
		stopAgent()
	}
	if !errors.Is(last, api.ErrUnavailable) {
		t.Errorf("got %v, want ErrUnavailable", last)
	}
	if err := <-served; err != nil {
		t.Error(err)
	}
}

func TestLogs(t *testing.T) {
	b := &fakeBackend{logs: "2024-05-01T10:00:00Z hello\n"}
	c, _ := startAgent(t, b, agentclient.Options{})
	var out bytes.Buffer
	opts := api.LogOptions{Container: "web", Previous: true, TailLines: 5, Timestamps: true,
		Since: time.Date(2024, 5, 1, 9, 0, 0, 0, time.UTC)}
	if err := c.Logs(context.Background(), "default/web", opts, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != b.logs {
		t.Errorf("log %q", out.String())
	}
	if diff := cmp.Diff(opts, b.logOpts); diff != "" {
		t.Errorf("options (-sent +got):\n%s", diff)
	}
	if err := c.Logs(context.Background(), "default/nope", api.LogOptions{}, io.Discard); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("unknown pod: %v", err)
	}
}

// Following a log streams it line by line until the caller cancels; the
// agent's side of the stream ends too.
func TestLogsFollowCancelled(t *testing.T) {
	b := &fakeBackend{logs: "first\n", logsDone: make(chan error, 1)}
	lines := make(chan string)
	b.logFollow = func(ctx context.Context, w io.Writer) error {
		for {
			select {
			case l := <-lines:
				if _, err := io.WriteString(w, l); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	c, _ := startAgent(t, b, agentclient.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- c.Logs(ctx, "default/web", api.LogOptions{Follow: true}, pw)
		pw.Close()
	}()
	buf := make([]byte, 64)
	read := func() string {
		n, err := pr.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	}
	if got := read(); got != "first\n" {
		t.Errorf("got %q", got)
	}
	lines <- "second\n"
	if got := read(); got != "second\n" {
		t.Errorf("got %q (not flushed?)", got)
	}
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Logs returned %v, want context.Canceled", err)
	}
	select {
	case err := <-b.logsDone:
		if err == nil {
			t.Errorf("the agent's stream did not see the cancellation")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the agent kept streaming after the client went away")
	}
}

// A log stream that fails after it started says so through a trailer.
func TestLogsFailMidStream(t *testing.T) {
	b := &fakeBackend{logs: "partial\n", logsDone: make(chan error, 1)}
	b.logFollow = func(context.Context, io.Writer) error {
		return fmt.Errorf("read log file: %w", api.ErrUnavailable)
	}
	c, _ := startAgent(t, b, agentclient.Options{})
	var out bytes.Buffer
	err := c.Logs(context.Background(), "default/web", api.LogOptions{Follow: true}, &out)
	if !errors.Is(err, api.ErrUnavailable) || !strings.Contains(err.Error(), "read log file") || out.String() != "partial\n" {
		t.Errorf("err %v, output %q", err, out.String())
	}
}

// echo copies stdin to stdout, says something on stderr and exits 3.
func echo(ctx context.Context, req api.ExecRequest) (int, error) {
	if req.Stdin == nil {
		return -1, fmt.Errorf("%w: echo needs stdin", api.ErrInvalid)
	}
	if _, err := io.Copy(req.Stdout, req.Stdin); err != nil {
		return -1, err
	}
	fmt.Fprintf(req.Stderr, "ran %s in %s/%s\n", strings.Join(req.Command, " "), req.Pod, req.Container)
	return 3, nil
}

func TestExecEchoesStdin(t *testing.T) {
	c, _ := startAgent(t, &fakeBackend{exec: echo}, agentclient.Options{})
	var stdout, stderr bytes.Buffer
	code, err := c.Exec(context.Background(), api.ExecRequest{
		Pod: "default/web", Container: "web", Command: []string{"cat", "-"},
		Stdin: strings.NewReader("hello\nworld\n"), Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil || code != 3 {
		t.Fatalf("exit %d, %v", code, err)
	}
	if stdout.String() != "hello\nworld\n" || stderr.String() != "ran cat - in default/web/web\n" {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}

	// Much more than a frame, both ways, with a slow reader on our side.
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	var out slowWriter
	code, err = c.Exec(context.Background(), api.ExecRequest{
		Pod: "default/web", Command: []string{"cat"}, Stdin: bytes.NewReader(big), Stdout: &out,
	})
	if err != nil || code != 3 || !bytes.Equal(out.Bytes(), big) {
		t.Errorf("1 MiB echo: exit %d, %v, %d bytes back", code, err, out.Len())
	}
}

type slowWriter struct{ bytes.Buffer }

func (w *slowWriter) Write(p []byte) (int, error) {
	if w.Len()%(256<<10) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	return w.Buffer.Write(p)
}

func TestExecErrorsAndExitCodes(t *testing.T) {
	b := &fakeBackend{exec: func(ctx context.Context, req api.ExecRequest) (int, error) {
		switch req.Command[0] {
		case "missing":
			return -1, fmt.Errorf("container %q: %w", req.Container, api.ErrNotFound)
		case "exit":
			return 42, nil
		}
		return 0, nil
	}}
	c, _ := startAgent(t, b, agentclient.Options{})
	ctx := context.Background()
	if code, err := c.Exec(ctx, api.ExecRequest{Pod: "default/web", Container: "sidecar", Command: []string{"missing"}}); !errors.Is(err, api.ErrNotFound) || code != -1 {
		t.Errorf("missing container: %d %v", code, err)
	}
	if code, err := c.Exec(ctx, api.ExecRequest{Pod: "default/web", Command: []string{"exit"}}); err != nil || code != 42 {
		t.Errorf("exit 42: %d %v", code, err)
	}
	// Without stdin, the command sees none.
	b.exec = func(_ context.Context, req api.ExecRequest) (int, error) {
		if req.Stdin != nil || req.Resize != nil || req.Stdout == nil || req.Stderr == nil {
			return 1, nil
		}
		return 0, nil
	}
	if code, err := c.Exec(ctx, api.ExecRequest{Pod: "default/web", Command: []string{"true"}}); err != nil || code != 0 {
		t.Errorf("no stdin: %d %v", code, err)
	}
}

// With a TTY, resizes reach the command, in order; closing stdin ends it.
func TestExecTTYResize(t *testing.T) {
	b := &fakeBackend{exec: func(ctx context.Context, req api.ExecRequest) (int, error) {
		if !req.TTY || req.Resize == nil || req.Stderr != nil {
			return -1, fmt.Errorf("%w: not a tty session", api.ErrInvalid)
		}
		stdinDone := make(chan struct{})
		go func() {
			io.Copy(io.Discard, req.Stdin)
			close(stdinDone)
		}()
		for {
			select {
			case size := <-req.Resize:
				fmt.Fprintf(req.Stdout, "%dx%d\n", size.Width, size.Height)
			case <-stdinDone:
				return 0, nil
			case <-ctx.Done():
				return -1, ctx.Err()
			}
		}
	}}
	c, _ := startAgent(t, b, agentclient.Options{})
	resize := make(chan api.TermSize)
	stdinR, stdinW := io.Pipe()
	out := newLineReader()
	done := make(chan error, 1)
	go func() {
		code, err := c.Exec(context.Background(), api.ExecRequest{
			Pod: "default/web", Command: []string{"sh"}, TTY: true,
			Stdin: stdinR, Stdout: out, Resize: resize,
		})
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d", code)
		}
		done <- err
	}()
	for _, size := range []api.TermSize{{Width: 80, Height: 24}, {Width: 132, Height: 43}} {
		resize <- size
		if got, want := out.next(t), fmt.Sprintf("%dx%d", size.Width, size.Height); got != want {
			t.Errorf("terminal saw %q, want %q", got, want)
		}
	}
	stdinW.Close()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// lineReader hands over what is written to it line by line.
type lineReader struct {
	mu    sync.Mutex
	buf   []byte
	lines chan string
}

func newLineReader() *lineReader { return &lineReader{lines: make(chan string, 16)} }

func (l *lineReader) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.lines <- string(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineReader) next(t *testing.T) string {
	t.Helper()
	select {
	case s := <-l.lines:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no output")
		return ""
	}
}

// Cancelling the caller's context ends the session and the command.
func TestExecCancelled(t *testing.T) {
	running := make(chan struct{})
	ended := make(chan error, 1)
	b := &fakeBackend{exec: func(ctx context.Context, req api.ExecRequest) (int, error) {
		close(running)
		<-ctx.Done()
		ended <- ctx.Err()
		return -1, ctx.Err()
	}}
	c, _ := startAgent(t, b, agentclient.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-running
		cancel()
	}()
	if _, err := c.Exec(ctx, api.ExecRequest{Pod: "default/web", Command: []string{"sleep", "inf"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v", err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the command went on after the client left")
	}
	// Timeout bounds a session the same way.
	b2 := &fakeBackend{exec: func(ctx context.Context, req api.ExecRequest) (int, error) {
		<-ctx.Done()
		return -1, ctx.Err()
	}}
	c2, _ := startAgent(t, b2, agentclient.Options{})
	if _, err := c2.Exec(context.Background(), api.ExecRequest{Pod: "default/web", Command: []string{"sleep"}, Timeout: 50 * time.Millisecond}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout: %v", err)
	}
}

// Calls reuse one connection; no more than MaxConns are ever open, exec
// sessions included.
func TestConnectionReuseAndBound(t *testing.T) {
	b := &fakeBackend{logsDone: make(chan error, 4), exec: func(ctx context.Context, req api.ExecRequest) (int, error) {
		<-ctx.Done()
		return -1, ctx.Err()
	}}
	b.logFollow = func(ctx context.Context, w io.Writer) error {
		<-ctx.Done()
		return ctx.Err()
	}
	_, sock := startAgent(t, b, agentclient.Options{})
	var dials, open, maxOpen atomic.Int32
	dial := func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		n := open.Add(1)
		for {
			m := maxOpen.Load()
			if n <= m || maxOpen.CompareAndSwap(m, n) {
				break
			}
		}
		conn, err := agentclient.DialUnix(sock)(ctx)
		if err != nil {
			open.Add(-1)
			return nil, err
		}
		return &countedConn{Conn: conn, open: &open}, nil
	}
	c := agentclient.New(dial, agentclient.Options{MaxConns: 2})
	defer c.Close()
	ctx := context.Background()
	for range 50 {
		if _, err := c.Pods(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("50 calls dialled %d times", n)
	}

	// Two long calls take both connections: a third waits.
	longCtx, cancelLong := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.Logs(longCtx, "default/web", api.LogOptions{Follow: true}, io.Discard) })
	wg.Go(func() { c.Exec(longCtx, api.ExecRequest{Pod: "default/web", Command: []string{"sh"}}) })
	waitFor(t, func() bool { return b.callCount() >= 52 })
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := c.Pods(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a third call with two connections busy: %v, want it to wait", err)
	}
	cancelLong()
	wg.Wait()
	if _, err := c.Pods(ctx); err != nil {
		t.Errorf("after the long calls ended: %v", err)
	}
	if m := maxOpen.Load(); m > 2 {
		t.Errorf("%d connections open at once, bound is 2", m)
	}
}

func (f *fakeBackend) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type countedConn struct {
	net.Conn
	open *atomic.Int32
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An agent that restarts (an upgrade) is found again on the next call:
// the client's kept-alive connection to the old one is not an error.
func TestAgentRestart(t *testing.T) {
	dir, err := os.MkdirTemp("", "berth-agentclient")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	start := func(b *fakeBackend) func() {
		l, err := httpapi.ListenUnix(sock)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- httpapi.Serve(ctx, l, httpapi.NewHandler(b, httpapi.Options{})) }()
		return func() {
			cancel()
			if err := <-served; err != nil {
				t.Error(err)
			}
		}
	}
	c := agentclient.New(agentclient.DialUnix(sock), agentclient.Options{})
	defer c.Close()
	ctx := context.Background()

	stop := start(&fakeBackend{node: api.NodeInfo{Name: "old"}})
	if n, err := c.Node(ctx); err != nil || n.Name != "old" {
		t.Fatal(n.Name, err)
	}
	stop()
	if _, err := c.Node(ctx); !errors.Is(err, api.ErrUnavailable) {
		t.Errorf("no agent: %v, want ErrUnavailable", err)
	}
	b := &fakeBackend{node: api.NodeInfo{Name: "new"}}
	defer start(b)()
	if n, err := c.Node(ctx); err != nil || n.Name != "new" {
		t.Errorf("after the restart: %q, %v", n.Name, err)
	}
	if err := c.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: []api.Pod{}}); err != nil {
		t.Errorf("set pods after the restart: %v", err)
	}
}
