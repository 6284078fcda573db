package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/logs"
)

// fakeClock moves only when told; timers fire inside Advance, in order.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	if d <= 0 {
		// Due now: as time.AfterFunc, it fires without waiting for time
		// to move.
		t.stopped = true
		c.mu.Unlock()
		f()
		return t
	}
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// Advance moves time forward by d, firing due timers in time order (a
// timer set by a firing one fires too if it is due).
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		var next *fakeTimer
		for i, t := range c.timers {
			if t.stopped {
				continue
			}
			if !t.at.After(end) {
				next = t
				c.timers = slices.Delete(c.timers, i, i+1)
			}
			break
		}
		c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool { return t.stopped })
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		if next.at.After(c.now) {
			c.now = next.at
		}
		next.stopped = true
		c.mu.Unlock()
		next.f()
	}
}

// fakeRuntime is an in-memory Runtime. Containers "run" a tiny script
// language, enough for the shared suite and the manager's tests:
// sh -c "echo X; exit N" writes X to the log and exits N; anything else
// (sleep, a server) runs until stopped or told to exit.
type fakeRuntime struct {
	clock Clock

	mu         sync.Mutex
	images     map[string]Image
	registry   map[string]bool  // refs a pull can fetch
	pullErr    map[string]error // refs whose pull fails this way
	sandboxes  map[string]Sandbox
	containers map[string]*fakeContainer
	nextID     int
	netnsDir   string
	calls      []string
	down       error                                       // every call fails with it (containerd restarting)
	execFn     func(c *fakeContainer, cmd []string) int    // exec behaviour; default runs the script language
	stopCode   int32                                       // exit code of a stopped container
	onStop     func(c *fakeContainer, grace time.Duration) // observes stops
	onImport   func(path string)                           // observes imports, before they read the archive
}

type fakeContainer struct {
	state ContainerState
	cfg   ContainerConfig
	name  string
}

func newFakeRuntime(t testing.TB, clock Clock) *fakeRuntime {
	return &fakeRuntime{
		clock:      clock,
		images:     map[string]Image{},
		registry:   map[string]bool{},
		pullErr:    map[string]error{},
		sandboxes:  map[string]Sandbox{},
		containers: map[string]*fakeContainer{},
		netnsDir:   t.TempDir(),
		stopCode:   137,
	}
}

func (r *fakeRuntime) record(format string, args ...any) {
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

// takeCalls returns and clears the recorded calls.
func (r *fakeRuntime) takeCalls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func (r *fakeRuntime) Version(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return "", r.down
	}
	return "fake 1.0", nil
}

func (r *fakeRuntime) EnsureImage(ctx context.Context, ref string, policy corev1.PullPolicy, auth []api.Sensitive) (Image, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return Image{}, r.down
	}
	img, present := r.images[ref]
	if present && policy != corev1.PullAlways {
		return img, nil
	}
	if policy == corev1.PullNever {
		return Image{}, fmt.Errorf("%w: image %s is not present", ErrImageNeverPull, ref)
	}
	r.record("pull %s", ref)
	if err := r.pullErr[ref]; err != nil {
		return Image{}, fmt.Errorf("%w: %v", ErrImagePull, err)
	}
	if !r.registry[ref] {
		return Image{}, fmt.Errorf("%w: %s: not found: manifest unknown", ErrImagePull, ref)
	}
	img = Image{Ref: ref, ID: "sha256:" + fmt.Sprintf("%064x", len(ref))}
	r.images[ref] = img
	return img, nil
}

// fakeArchiveMagic starts an archive the fake imports: the lines after it
// name the images the archive holds.
const fakeArchiveMagic = "fake-archive v1\n"

// fakeArchive is an archive of images refs for the fake runtime.
func fakeArchive(refs ...string) string {
	return fakeArchiveMagic + strings.Join(refs, "\n") + "\n"
}

func (r *fakeRuntime) ImportArchive(ctx context.Context, path string) ([]Image, error) {
	r.mu.Lock()
	hook, down := r.onImport, r.down
	r.mu.Unlock()
	if down != nil {
		return nil, down
	}
	if hook != nil {
		hook(path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	body, ok := strings.CutPrefix(string(b), fakeArchiveMagic)
	if !ok {
		return nil, fmt.Errorf("import %s: unrecognized image format", path)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.record("import %d bytes", len(b))
	var out []Image
	for _, ref := range strings.Fields(body) {
		img := Image{Ref: ref, ID: "sha256:" + fmt.Sprintf("%064x", len(ref)+1000)}
		r.images[ref] = img
		out = append(out, img)
	}
	return out, nil
}

func (r *fakeRuntime) CreateSandbox(ctx context.Context, pod *api.Pod) (Sandbox, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return Sandbox{}, r.down
	}
	if sb, ok := r.sandboxes[pod.UID]; ok {
		return sb, nil
	}
	sb := Sandbox{PodUID: pod.UID, Pod: pod.Key()}
	if !pod.Spec.HostNetwork {
		sb.NetNS = filepath.Join(r.netnsDir, pod.UID)
		if err := os.WriteFile(sb.NetNS, nil, 0o600); err != nil {
			return Sandbox{}, err
		}
	}
	r.sandboxes[pod.UID] = sb
	r.record("sandbox %s", pod.Key())
	return sb, nil
}

func (r *fakeRuntime) RemoveSandbox(ctx context.Context, podUID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return r.down
	}
	sb, ok := r.sandboxes[podUID]
	if !ok {
		return nil
	}
	if sb.NetNS != "" {
		os.Remove(sb.NetNS)
	}
	delete(r.sandboxes, podUID)
	r.record("remove-sandbox %s", sb.Pod)
	return nil
}

func (r *fakeRuntime) ListSandboxes(ctx context.Context) ([]Sandbox, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return nil, r.down
	}
	var out []Sandbox
	for _, sb := range r.sandboxes {
		out = append(out, sb)
	}
	return out, nil
}

func (r *fakeRuntime) CreateContainer(ctx context.Context, cfg ContainerConfig) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return "", r.down
	}
	if _, ok := r.sandboxes[cfg.Pod.UID]; !ok {
		return "", fmt.Errorf("create container %s: pod %s has no sandbox", cfg.Container.Name, cfg.Pod.Key())
	}
	r.nextID++
	id := fmt.Sprintf("c%d", r.nextID)
	r.containers[id] = &fakeContainer{
		name: cfg.Container.Name,
		cfg:  cfg,
		state: ContainerState{
			ID: id,
			Labels: map[string]string{
				api.LabelManaged:   "true",
				api.LabelPodUID:    cfg.Pod.UID,
				api.LabelPodName:   cfg.Pod.Key(),
				api.LabelContainer: cfg.Container.Name,
				api.LabelAttempt:   strconv.Itoa(int(cfg.Attempt)),
				api.LabelPodHash:   cfg.Pod.Hash,
			},
			Image:     cfg.Container.Image,
			ImageID:   cfg.Image.ID,
			State:     StateCreated,
			CreatedAt: r.clock.Now(),
		},
	}
	r.record("create %s/%s#%d", cfg.Pod.Key(), cfg.Container.Name, cfg.Attempt)
	return id, nil
}

// script is a container's command line as sh -c would see it.
func script(c *corev1.Container) string {
	argv := append(slices.Clone(c.Command), c.Args...)
	if len(argv) >= 3 && argv[0] == "sh" && argv[1] == "-c" {
		return argv[2]
	}
	return strings.Join(argv, " ")
}

// runScript interprets the script language: it returns the output lines,
// and the exit code if the script ends.
func runScript(s string) (out []string, code int32, exits bool) {
	if strings.TrimSpace(s) == "" {
		return nil, 0, false // the image's server
	}
	for _, stmt := range strings.Split(s, ";") {
		f := strings.Fields(stmt)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "echo":
			out = append(out, strings.Join(f[1:], " "))
		case "exit":
			n, _ := strconv.Atoi(f[1])
			return out, int32(n), true
		case "true":
		case "false":
			return out, 1, true
		default: // sleep, servers, trap: keep running
			return out, 0, false
		}
	}
	return out, 0, true
}

func (r *fakeRuntime) StartContainer(ctx context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return r.down
	}
	c, ok := r.containers[id]
	if !ok {
		return fmt.Errorf("%w: container %s", api.ErrNotFound, id)
	}
	if c.state.State != StateCreated {
		return fmt.Errorf("container %s is %s", id, c.state.State)
	}
	now := r.clock.Now()
	c.state.State = StateRunning
	c.state.StartedAt = now
	c.state.Pid = uint32(1000 + r.nextID)
	r.record("start %s/%s#%s", c.cfg.Pod.Key(), c.name, c.state.Labels[api.LabelAttempt])
	out, code, exits := runScript(script(c.cfg.Container))
	if len(out) > 0 && c.cfg.LogPath != "" {
		os.MkdirAll(filepath.Dir(c.cfg.LogPath), 0o755)
		var b []byte
		for _, l := range out {
			b = logs.AppendEntry(b, logs.Entry{Time: now, Stream: logs.Stdout, Tag: logs.Full, Content: []byte(l)})
		}
		f, err := os.OpenFile(c.cfg.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			f.Write(b)
			f.Close()
		}
	}
	if exits {
		r.exitLocked(c, code)
	}
	return nil
}

func (r *fakeRuntime) exitLocked(c *fakeContainer, code int32) {
	c.state.State = StateExited
	c.state.ExitCode = code
	c.state.FinishedAt = r.clock.Now()
	c.state.Pid = 0
	c.state.Reason = "Completed"
	if code != 0 {
		c.state.Reason = "Error"
	}
}

func (r *fakeRuntime) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	r.mu.Lock()
	if r.down != nil {
		r.mu.Unlock()
		return r.down
	}
	c, ok := r.containers[id]
	if !ok || c.state.State != StateRunning {
		r.mu.Unlock()
		return nil
	}
	r.record("stop %s/%s#%s grace=%s", c.cfg.Pod.Key(), c.name, c.state.Labels[api.LabelAttempt], grace)
	r.exitLocked(c, r.stopCode)
	onStop := r.onStop
	r.mu.Unlock()
	if onStop != nil {
		onStop(c, grace)
	}
	return nil
}

func (r *fakeRuntime) RemoveContainer(ctx context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return r.down
	}
	c, ok := r.containers[id]
	if !ok {
		return nil
	}
	if c.state.State == StateRunning {
		return fmt.Errorf("container %s is running", id)
	}
	delete(r.containers, id)
	r.record("remove %s/%s#%s", c.cfg.Pod.Key(), c.name, c.state.Labels[api.LabelAttempt])
	return nil
}

func (r *fakeRuntime) ContainerStatus(ctx context.Context, id string) (ContainerState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return ContainerState{}, r.down
	}
	c, ok := r.containers[id]
	if !ok {
		return ContainerState{}, fmt.Errorf("%w: container %s", api.ErrNotFound, id)
	}
	return c.state, nil
}

func (r *fakeRuntime) ListContainers(ctx context.Context) ([]ContainerState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down != nil {
		return nil, r.down
	}
	var out []ContainerState
	for _, c := range r.containers {
		out = append(out, c.state)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (r *fakeRuntime) Exec(ctx context.Context, id string, req api.ExecRequest) (int, error) {
	r.mu.Lock()
	if r.down != nil {
		r.mu.Unlock()
		return 0, r.down
	}
	c, ok := r.containers[id]
	if !ok {
		r.mu.Unlock()
		return 0, fmt.Errorf("%w: container %s", api.ErrNotFound, id)
	}
	if c.state.State != StateRunning {
		r.mu.Unlock()
		return 0, fmt.Errorf("container %s is not running", id)
	}
	r.record("exec %s/%s %s", c.cfg.Pod.Key(), c.name, strings.Join(req.Command, " "))
	fn := r.execFn
	r.mu.Unlock()
	if fn != nil {
		return fn(c, req.Command), nil
	}
	s := strings.Join(req.Command, " ")
	if len(req.Command) >= 3 && req.Command[0] == "sh" && req.Command[1] == "-c" {
		s = req.Command[2]
	}
	out, code, _ := runScript(s)
	if req.Stdout != nil {
		for _, l := range out {
			fmt.Fprintln(req.Stdout, l)
		}
	}
	return int(code), nil
}

// exit makes a running container exit with code, as a crash would.
func (r *fakeRuntime) exit(t testing.TB, pod, container string, code int32) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.containers {
		if c.cfg.Pod.Key() == pod && c.name == container && c.state.State == StateRunning {
			r.exitLocked(c, code)
			return
		}
	}
	t.Fatalf("no running container %s in %s", container, pod)
}

// reboot loses every task and network namespace; containers remain as
// containerd keeps them, stopped.
func (r *fakeRuntime) reboot() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.containers {
		if c.state.State == StateRunning {
			c.state.State = StateUnknown
			c.state.Pid = 0
			c.state.ExitCode = 255
		}
	}
	for _, sb := range r.sandboxes {
		if sb.NetNS != "" {
			os.Remove(sb.NetNS)
		}
	}
}

func (r *fakeRuntime) setDown(err error) {
	r.mu.Lock()
	r.down = err
	r.mu.Unlock()
}

var errContainerdDown = errors.New("connection error: dial unix /run/containerd/containerd.sock: connect: no such file or directory")
