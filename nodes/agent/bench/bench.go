// Package bench measures how long the node agent takes to bring N pods of
// the echo test image to Running and Ready on this machine, and, side by
// side in the same invocation, how long podman kube play takes for the
// same N pods. It backs `berth bench agent`.
//
// Everything runs privately: a containerd with its own root, state and
// socket under /run/berth-bench-XXXX (CRI plugin disabled), Debian's
// docker-registry on a loopback port holding berth/echo:1 (built and
// pushed by examples/images), and the agent's pod manager in this process
// on that containerd. Both contenders start with the image already
// present: containerd's is pulled once before the first run, podman's is
// pulled from the same registry before its first run; neither pull is
// timed.
package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/examples/images"
	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/runtime"
	"berth.dev/berth/render/api/v1alpha1"
)

// Peer names.
const (
	PeerPodman = "podman"
	PeerNone   = "none"
)

// Options of a bench.
type Options struct {
	Pods int    // pods per run (default 50)
	Runs int    // runs per contender (default 3)
	Peer string // PeerPodman (default) or PeerNone
	// Keep leaves the temporary directory (logs, state) in place.
	Keep bool
	// BasePort is the first pod's port; pod i listens on BasePort+i
	// (default 18080).
	BasePort int
	// Timeout bounds one run's wait for all pods (default 5 minutes).
	Timeout time.Duration
	// Progress receives a line per step (may be nil).
	Progress func(format string, args ...any)
	Logger   *slog.Logger
}

// Run is one timed run of one contender.
type RunResult struct {
	// Running: all pods' containers running. Ready: all pods ready.
	Running time.Duration `json:"running"`
	Ready   time.Duration `json:"ready"`
	// Teardown: from the removal request until nothing is left.
	Teardown time.Duration `json:"teardown"`
}

// Contender is the result of one contender over all runs.
type Contender struct {
	Name string      `json:"name"`
	Runs []RunResult `json:"runs"`
	// Medians over the runs.
	MedianRunning  time.Duration `json:"medianRunning"`
	MedianReady    time.Duration `json:"medianReady"`
	MedianTeardown time.Duration `json:"medianTeardown"`
	// ReadyMeans says what "ready" measured for this contender.
	ReadyMeans string `json:"readyMeans"`
}

// Result of a bench.
type Result struct {
	Pods      int        `json:"pods"`
	Runs      int        `json:"runs"`
	Image     string     `json:"image"`
	ImageNote string     `json:"imageNote"`
	Berth     Contender  `json:"berth"`
	Podman    *Contender `json:"podman,omitempty"`
	// Ratio is podman's median time to ready over berth's (0 without a
	// peer).
	Ratio float64 `json:"ratio,omitempty"`
	Dir   string  `json:"dir,omitempty"`
}

const namespace = "berth-bench"

func (o *Options) defaults() {
	if o.Pods == 0 {
		o.Pods = 50
	}
	if o.Runs == 0 {
		o.Runs = 3
	}
	if o.Peer == "" {
		o.Peer = PeerPodman
	}
	if o.BasePort == 0 {
		o.BasePort = 18080
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Bench runs the bench. Everything it started is stopped and removed
// before it returns, also when ctx ends (Ctrl-C).
func Bench(ctx context.Context, opts Options) (res *Result, err error) {
	opts.defaults()
	if opts.Pods < 1 || opts.Runs < 1 {
		return nil, errors.New("pods and runs must be at least 1")
	}
	if opts.Peer != PeerPodman && opts.Peer != PeerNone {
		return nil, fmt.Errorf("peer must be %s or %s, not %q", PeerPodman, PeerNone, opts.Peer)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the bench needs root (containerd, network namespaces, podman)")
	}
	var podmanBin string
	if opts.Peer == PeerPodman {
		if podmanBin, err = lookPath("podman"); err != nil {
			return nil, err
		}
	}

	dir, err := os.MkdirTemp("/run", "berth-bench-")
	if err != nil {
		return nil, err
	}
	res = &Result{Pods: opts.Pods, Runs: opts.Runs}
	if opts.Keep {
		res.Dir = dir
	}
	defer func() {
		if !opts.Keep {
			os.RemoveAll(dir)
		}
	}()

	opts.Progress("starting containerd and registry under %s", dir)
	cd, err := startContainerd(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		cd.removeAll(namespace)
		cd.stop()
	}()
	reg, host, err := startRegistry(dir)
	if err != nil {
		return nil, err
	}
	defer reg.stop(5 * time.Second)

	opts.Progress("building and pushing %s", images.EchoRef(host, "1"))
	pushed, err := images.PushEcho(ctx, host, true, "1")
	if err != nil {
		// The echo image is compiled from source with the go command.
		return nil, fmt.Errorf("%w (the bench builds the echo image with `go build`: run it from the berth checkout with Go installed)", err)
	}
	ref := pushed[0].Ref
	res.Image = ref
	res.ImageNote = "pulled once from a loopback registry before timing (containerd and podman alike); every run starts with the image present"

	// Pre-pull into the bench namespace once: images are per namespace,
	// and every run uses the same one.
	rt, err := newRuntime(ctx, cd, host, filepath.Join(dir, "prepull"), opts.Logger)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := rt.EnsureImage(ctx, ref, corev1.PullIfNotPresent, nil); err != nil {
		rt.Close()
		return nil, fmt.Errorf("pre-pull: %w", err)
	}
	rt.Close()
	opts.Progress("pre-pulled %s into containerd in %v (not timed)", ref, time.Since(start).Round(time.Millisecond))

	res.Berth = Contender{Name: "berth", ReadyMeans: "the agent reports every pod Ready (readiness httpGet /readyz, periodSeconds 1, passing)"}
	for i := range opts.Runs {
		r, err := runBerth(ctx, opts, cd, host, ref, filepath.Join(dir, fmt.Sprintf("run%d", i)))
		if err != nil {
			return res, fmt.Errorf("berth run %d: %w", i+1, err)
		}
		opts.Progress("berth   run %d: running %v, ready %v, teardown %v", i+1, r.Running.Round(time.Millisecond), r.Ready.Round(time.Millisecond), r.Teardown.Round(time.Millisecond))
		res.Berth.Runs = append(res.Berth.Runs, r)
	}
	res.Berth.summarize()

	if opts.Peer == PeerPodman {
		p, err := benchPodman(ctx, opts, podmanBin, ref, dir)
		if p != nil {
			p.summarize()
			res.Podman = p
		}
		if err != nil {
			return res, err
		}
		if res.Berth.MedianReady > 0 {
			res.Ratio = float64(p.MedianReady) / float64(res.Berth.MedianReady)
		}
	}
	return res, nil
}

func (c *Contender) summarize() {
	med := func(f func(RunResult) time.Duration) time.Duration {
		var ds []time.Duration
		for _, r := range c.Runs {
			ds = append(ds, f(r))
		}
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		if len(ds)%2 == 1 {
			return ds[len(ds)/2]
		}
		return (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	c.MedianRunning = med(func(r RunResult) time.Duration { return r.Running })
	c.MedianReady = med(func(r RunResult) time.Duration { return r.Ready })
	c.MedianTeardown = med(func(r RunResult) time.Duration { return r.Teardown })
}

func newRuntime(ctx context.Context, cd *containerdDaemon, host, state string, log *slog.Logger) (*runtime.Runtime, error) {
	return runtime.New(ctx, runtime.Options{
		Address:    cd.address,
		Namespace:  namespace,
		StateDir:   state,
		Registries: []v1alpha1.Registry{{Host: host, PlainHTTP: true}},
		Logger:     log,
	})
}

// podName is the name of pod i, the same for both contenders.
func podName(i int) string { return fmt.Sprintf("bench-%03d", i) }

func echoArgs(port int) []string { return []string{"--listen", fmt.Sprintf("127.0.0.1:%d", port)} }

func berthPod(i, port int, ref string) api.Pod {
	name := podName(i)
	c := corev1.Container{
		Name: "echo", Image: ref, ImagePullPolicy: corev1.PullIfNotPresent,
		Args:  echoArgs(port),
		Env:   []corev1.EnvVar{{Name: "POD_NAME", Value: name}},
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt(port)}},
			PeriodSeconds: 1, FailureThreshold: 3, SuccessThreshold: 1, TimeoutSeconds: 1,
		},
	}
	grace := int64(5)
	return api.Pod{
		Namespace: "default", Name: name, UID: fmt.Sprintf("%s-%d", name, time.Now().UnixNano()), Hash: "bench",
		Spec: api.PodSpec{RestartPolicy: corev1.RestartPolicyAlways, Containers: []corev1.Container{c},
			TerminationGracePeriodSeconds: &grace},
	}
}

// runBerth runs the agent's manager on a fresh state directory, sets N
// pods and polls Pods every 50 ms until all are Running and Ready, then
// removes them and waits until the runtime is empty.
func runBerth(ctx context.Context, opts Options, cd *containerdDaemon, host, ref, state string) (RunResult, error) {
	var r RunResult
	rt, err := newRuntime(ctx, cd, host, filepath.Join(state, "state"), opts.Logger)
	if err != nil {
		return r, err
	}
	defer rt.Close()
	m, err := agent.New(agent.Options{
		Runtime:      rt,
		StateDir:     filepath.Join(state, "state"),
		LogDir:       filepath.Join(state, "logs"),
		NodeName:     "bench",
		Logger:       opts.Logger,
		MaxPods:      opts.Pods + 10,
		AgentVersion: "bench",
	})
	if err != nil {
		return r, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()
	defer func() {
		cancel()
		<-done
		// Whatever the manager left (an interrupted run): remove it.
		cleanCtx, c2 := context.WithTimeout(context.Background(), time.Minute)
		defer c2()
		if ctrs, err := rt.ListContainers(cleanCtx); err == nil {
			for _, c := range ctrs {
				rt.StopContainer(cleanCtx, c.ID, 0)
				rt.RemoveContainer(cleanCtx, c.ID)
			}
		}
		if sbs, err := rt.ListSandboxes(cleanCtx); err == nil {
			for _, sb := range sbs {
				rt.RemoveSandbox(cleanCtx, sb.PodUID)
			}
		}
	}()

	pods := make([]api.Pod, opts.Pods)
	for i := range pods {
		pods[i] = berthPod(i, opts.BasePort+i, ref)
	}
	start := time.Now()
	if err := m.SetPods(ctx, api.DesiredPods{Generation: 1, Pods: pods}); err != nil {
		return r, err
	}
	wctx, wcancel := context.WithTimeout(ctx, opts.Timeout)
	defer wcancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for r.Ready == 0 {
		select {
		case <-wctx.Done():
			st, _ := m.Pods(context.Background())
			return r, fmt.Errorf("pods not all ready: %w (%s)", wctx.Err(), describe(st))
		case <-tick.C:
		}
		st, err := m.Pods(wctx)
		if err != nil {
			continue
		}
		running, ready := 0, 0
		for _, p := range st {
			if p.Phase == corev1.PodRunning {
				running++
				if p.Ready {
					ready++
				}
			}
		}
		now := time.Since(start)
		if r.Running == 0 && running == opts.Pods {
			r.Running = now
		}
		if ready == opts.Pods {
			r.Ready = now
		}
	}

	start = time.Now()
	if err := m.SetPods(ctx, api.DesiredPods{Generation: 2}); err != nil {
		return r, err
	}
	for {
		ctrs, err1 := rt.ListContainers(wctx)
		sbs, err2 := rt.ListSandboxes(wctx)
		if err1 == nil && err2 == nil && len(ctrs) == 0 && len(sbs) == 0 {
			break
		}
		select {
		case <-wctx.Done():
			return r, fmt.Errorf("teardown: %w", wctx.Err())
		case <-tick.C:
		}
	}
	r.Teardown = time.Since(start)
	return r, nil
}

func describe(st []api.PodStatus) string {
	counts := map[string]int{}
	for _, p := range st {
		k := string(p.Phase)
		if p.Ready {
			k += "/ready"
		}
		if p.Reason != "" {
			k += "/" + p.Reason
		}
		counts[k]++
	}
	return fmt.Sprint(counts)
}
