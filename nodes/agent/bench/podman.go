package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"berth.dev/berth/nodes/agent/probe"
)

// systemContainersConf is podman's system configuration file.
const systemContainersConf = "/etc/containers/containers.conf"

// ulimitsLine is what podman 4.3 needs on this kind of machine: without
// default_ulimits, runc fails setting rlimits under kube play.
const ulimitsLine = `default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]`

// podmanConf returns the value for CONTAINERS_CONF: "" when the system
// file already sets default_ulimits, else a file under dir that is the
// system file (if any) with the ulimits line added to its [containers]
// table. /etc is never modified.
func podmanConf(dir string) (string, error) {
	sys, err := os.ReadFile(systemContainersConf)
	if err != nil && !os.IsNotExist(err) {
		return "", err
	}
	if bytes.Contains(sys, []byte("\ndefault_ulimits")) || bytes.HasPrefix(sys, []byte("default_ulimits")) {
		return "", nil
	}
	var out []byte
	if i := bytes.Index(sys, []byte("[containers]")); i >= 0 {
		j := i + len("[containers]")
		out = append(out, sys[:j]...)
		out = append(out, "\n"+ulimitsLine+"\n"...)
		out = append(out, sys[j:]...)
	} else {
		out = append(out, "[containers]\n"+ulimitsLine+"\n\n"...)
		out = append(out, sys...)
	}
	path := filepath.Join(dir, "containers.conf")
	return path, os.WriteFile(path, out, 0o644)
}

type podman struct {
	bin, conf string
}

func (p *podman) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, p.bin, args...)
	if p.conf != "" {
		c.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	}
	return c
}

func (p *podman) run(ctx context.Context, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	c := p.cmd(ctx, args...)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return out, fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// podYAML is the same N pods as Kubernetes Pod documents. They declare no
// ports: podman turns containerPort into a host port mapping, which needs
// a bridge network, and the agent's pods have loopback only.
func podYAML(opts Options, ref string) []byte {
	var b strings.Builder
	for i := range opts.Pods {
		port := opts.BasePort + i
		if i > 0 {
			b.WriteString("---\n")
		}
		fmt.Fprintf(&b, `apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels:
    app: berth-bench
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  containers:
  - name: echo
    image: %s
    imagePullPolicy: IfNotPresent
    args: ["--listen", "127.0.0.1:%d"]
    env:
    - name: POD_NAME
      value: %s
    readinessProbe:
      httpGet:
        path: /readyz
        port: %d
      periodSeconds: 1
      timeoutSeconds: 1
      failureThreshold: 3
`, podName(i), ref, port, podName(i), port)
	}
	return []byte(b.String())
}

const podmanReadyMeans = "podman kube play returned and podman ps shows every container running; then GET /readyz answered 200 inside every pod's network namespace " +
	"(podman 4.3 turns no readinessProbe into a health check it runs, and without systemd no health check timer runs, so the bench probes like the agent does, polling every 50 ms)"

// benchPodman runs the podman contender: pull (untimed), then per run
// kube play, wait for running and ready, kube down. Pods and the image are
// removed on every exit path.
func benchPodman(ctx context.Context, opts Options, bin, ref, dir string) (*Contender, error) {
	conf, err := podmanConf(dir)
	if err != nil {
		return nil, err
	}
	p := &podman{bin: bin, conf: conf}
	if conf != "" {
		opts.Progress("podman: CONTAINERS_CONF=%s (adds %s; %s untouched)", conf, ulimitsLine, systemContainersConf)
	}
	// Leftovers from an interrupted bench of the same names.
	p.removePods()

	// kube play gives every pod an infra container whose image podman
	// builds locally on first use, with catatonit: build it now, untimed,
	// and remove it afterwards if it was not there before.
	pauseBefore, _ := p.run(ctx, "images", "--quiet", "--filter", "reference=localhost/podman-pause")
	if _, err := p.run(ctx, "pod", "create", "--label", "app=berth-bench", "--name", "berth-bench-warmup"); err != nil {
		if strings.Contains(err.Error(), "catatonit") {
			err = fmt.Errorf("%w (install Debian's catatonit package)", err)
		}
		return nil, err
	}
	p.removePods()
	if len(bytes.TrimSpace(pauseBefore)) == 0 {
		defer func() {
			if out, err := p.run(context.Background(), "images", "--quiet", "--filter", "reference=localhost/podman-pause"); err == nil {
				for _, id := range strings.Fields(string(out)) {
					p.run(context.Background(), "rmi", "--force", id)
				}
			}
		}()
	}
	start := time.Now()
	if _, err := p.run(ctx, "pull", "--quiet", "--tls-verify=false", ref); err != nil {
		return nil, err
	}
	defer p.run(context.Background(), "rmi", "--force", ref)
	opts.Progress("pulled %s into podman in %v (not timed)", ref, time.Since(start).Round(time.Millisecond))

	file := filepath.Join(dir, "pods.yaml")
	if err := os.WriteFile(file, podYAML(opts, ref), 0o644); err != nil {
		return nil, err
	}
	c := &Contender{Name: "podman", ReadyMeans: podmanReadyMeans}
	for i := range opts.Runs {
		r, err := p.runOnce(ctx, opts, file)
		if err != nil {
			return c, fmt.Errorf("podman run %d: %w", i+1, err)
		}
		opts.Progress("podman  run %d: running %v, ready %v, teardown %v", i+1, r.Running.Round(time.Millisecond), r.Ready.Round(time.Millisecond), r.Teardown.Round(time.Millisecond))
		c.Runs = append(c.Runs, r)
	}
	return c, nil
}

// removePods force-removes every pod the bench's YAML names.
func (p *podman) removePods() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := p.run(ctx, "pod", "ps", "--quiet", "--filter", "label=app=berth-bench")
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return
	}
	args := append([]string{"pod", "rm", "--force", "--time", "0"}, strings.Fields(string(out))...)
	p.run(ctx, args...)
}

type psEntry struct {
	Names   []string `json:"Names"`
	State   string   `json:"State"`
	Pid     int      `json:"Pid"`
	PodName string   `json:"PodName"`
	IsInfra bool     `json:"IsInfra"`
}

func (p *podman) runOnce(ctx context.Context, opts Options, file string) (RunResult, error) {
	var r RunResult
	defer p.removePods()
	wctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	start := time.Now()
	// --network none: each pod gets its own network namespace with only
	// loopback, as the agent's pods have for now.
	if out, err := p.run(wctx, "kube", "play", "--network", "none", file); err != nil {
		return r, fmt.Errorf("%w\n%s", err, out)
	}
	// kube play returns once it has started the pods; check that every
	// app container is running (not polled during kube play, so as not to
	// slow it down).
	var ents []psEntry
	for {
		out, err := p.run(wctx, "ps", "--format", "json", "--filter", "label=app=berth-bench")
		if err != nil {
			return r, err
		}
		ents = ents[:0]
		if err := json.Unmarshal(out, &ents); err != nil {
			return r, fmt.Errorf("podman ps: %w", err)
		}
		running := 0
		for _, e := range ents {
			if !e.IsInfra && e.State == "running" {
				running++
			}
		}
		if running >= opts.Pods {
			break
		}
		select {
		case <-wctx.Done():
			return r, fmt.Errorf("containers not all running (%d of %d): %w", running, opts.Pods, wctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	r.Running = time.Since(start)

	// Ready: /readyz answers 200 in every pod's network namespace.
	ports := map[string]int{}
	for i := range opts.Pods {
		ports[podName(i)] = opts.BasePort + i
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ents))
	for _, e := range ents {
		port, ok := ports[e.PodName]
		if e.IsInfra || !ok {
			continue
		}
		wg.Go(func() {
			if err := waitReady(wctx, fmt.Sprintf("/proc/%d/ns/net", e.Pid), port); err != nil {
				errs <- fmt.Errorf("pod %s: %w", e.PodName, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return r, err
	}
	r.Ready = time.Since(start)

	start = time.Now()
	if out, err := p.run(wctx, "kube", "down", file); err != nil {
		return r, fmt.Errorf("%w\n%s", err, out)
	}
	r.Teardown = time.Since(start)
	return r, nil
}

func waitReady(ctx context.Context, netns string, port int) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: probe.DialContext(netns), DisableKeepAlives: true}}
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %v (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
