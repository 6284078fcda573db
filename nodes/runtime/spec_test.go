package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render/api/v1alpha1"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "a", "EMPTY": "", "B": "b b"}
	for in, want := range map[string]string{
		"plain":            "plain",
		"$(A)":             "a",
		"x$(A)y$(B)z":      "xayb bz",
		"$(MISSING)":       "$(MISSING)",
		"$$(A)":            "$(A)",
		"$$$(A)":           "$a",
		"$(EMPTY)|":        "|",
		"$A":               "$A",
		"$(A":              "$(A",
		"trailing $":       "trailing $",
		"$(A)$(A)":         "aa",
		"cost $$5":         "cost $5",
		"$(B) and $(NOPE)": "b b and $(NOPE)",
	} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestProcessArgs(t *testing.T) {
	img := ocispec.ImageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"--cmd"}}
	env := map[string]string{"PORT": "9090"}
	for _, c := range []struct {
		name          string
		command, args []string
		img           ocispec.ImageConfig
		want          string
		wantErr       bool
	}{
		{name: "image", img: img, want: "[/entry --cmd]"},
		{name: "args replace cmd", args: []string{"--listen", ":$(PORT)"}, img: img, want: "[/entry --listen :9090]"},
		{name: "command replaces both", command: []string{"/bin/sh", "-c"}, img: img, want: "[/bin/sh -c]"},
		{name: "command and args", command: []string{"/x"}, args: []string{"$(PORT)"}, img: img, want: "[/x 9090]"},
		{name: "nothing anywhere", img: ocispec.ImageConfig{}, wantErr: true},
		{name: "cmd only image", img: ocispec.ImageConfig{Cmd: []string{"/c"}}, want: "[/c]"},
	} {
		got, err := processArgs(&corev1.Container{Name: "c", Command: c.command, Args: c.args}, c.img, env)
		if c.wantErr {
			if !errors.Is(err, ErrCreateContainerConfig) {
				t.Errorf("%s: err %v, want ErrCreateContainerConfig", c.name, err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("%s: %v %v, want %s", c.name, got, err, c.want)
		}
	}
}

func TestContainerEnv(t *testing.T) {
	img := ocispec.ImageConfig{Env: []string{"PATH=/bin", "LANG=C", "HOSTNAME=image"}}
	c := &corev1.Container{Env: []corev1.EnvVar{
		{Name: "LANG", Value: "en"},
		{Name: "A", Value: "a"},
		{Name: "B", Value: "$(A)-$(PATH)"}, // only the container's own vars expand
		{Name: "A", Value: "again"},
	}}
	env, own := containerEnv(img, "pod-0", nil, c)
	want := "[PATH=/bin LANG=en HOSTNAME=pod-0 A=again B=a-$(PATH)]"
	if fmt.Sprint(env) != want {
		t.Errorf("env = %v, want %s", env, want)
	}
	if own["B"] != "a-$(PATH)" || own["A"] != "again" {
		t.Errorf("own vars %v", own)
	}

	// The pod's addresses are the machine's to fill in.
	fieldRef := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	c = &corev1.Container{Env: []corev1.EnvVar{
		{Name: "POD_IP", ValueFrom: fieldRef("status.podIP")},
		{Name: "POD_IPS", ValueFrom: fieldRef("status.podIPs")},
		{Name: "URL", Value: "http://$(POD_IP):8080"},
	}}
	env, _ = containerEnv(ocispec.ImageConfig{}, "pod-0", []string{"198.18.64.5", "fd00::5"}, c)
	want = "[HOSTNAME=pod-0 POD_IP=198.18.64.5 POD_IPS=198.18.64.5,fd00::5 URL=http://198.18.64.5:8080]"
	if fmt.Sprint(env) != want {
		t.Errorf("env with pod IPs = %v, want %s", env, want)
	}
}

func TestResources(t *testing.T) {
	q := resource.MustParse
	for _, c := range []struct {
		req, lim corev1.ResourceList
		want     cgroupResources
	}{
		{nil, nil, cgroupResources{shares: 2}},
		{corev1.ResourceList{"cpu": q("250m")}, nil, cgroupResources{shares: 256}},
		{corev1.ResourceList{"cpu": q("1m")}, nil, cgroupResources{shares: 2}},
		{nil, corev1.ResourceList{"cpu": q("500m")}, cgroupResources{shares: 512, quota: 50000}},
		{corev1.ResourceList{"cpu": q("100m")}, corev1.ResourceList{"cpu": q("2"), "memory": q("64Mi")}, cgroupResources{shares: 102, quota: 200000, memoryLimit: 64 << 20}},
		{nil, corev1.ResourceList{"cpu": q("5m")}, cgroupResources{shares: 5, quota: 1000}},
	} {
		got := resourcesOf(&corev1.Container{Resources: corev1.ResourceRequirements{Requests: c.req, Limits: c.lim}})
		if got != c.want {
			t.Errorf("requests %v limits %v → %+v, want %+v", c.req, c.lim, got, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestSecurityContext(t *testing.T) {
	pod := &corev1.PodSecurityContext{RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(2000)), RunAsNonRoot: ptr(true), FSGroup: ptr(int64(3000)), SupplementalGroups: []int64{4000}}
	sc := effectiveSecurityContext(pod, &corev1.SecurityContext{RunAsUser: ptr(int64(1001))})
	if *sc.runAsUser != 1001 || *sc.runAsGroup != 2000 || !*sc.runAsNonRoot || *sc.fsGroup != 3000 {
		t.Errorf("effective context %+v", sc)
	}
	for _, c := range []struct {
		sc                 securityContext
		image              string
		wantUser, wantPart string
	}{
		{securityContext{}, "", "", "root"},
		{securityContext{}, "nonroot", "nonroot", "nonroot"},
		{securityContext{}, "1000:1000", "1000:1000", "1000"},
		{securityContext{runAsUser: ptr(int64(5))}, "nonroot", "5", "5"},
		{securityContext{runAsUser: ptr(int64(5)), runAsGroup: ptr(int64(6))}, "", "5:6", "5"},
		{securityContext{runAsGroup: ptr(int64(6))}, "nonroot:x", "nonroot:6", "nonroot"},
		{securityContext{runAsGroup: ptr(int64(6))}, "", "0:6", "0"},
	} {
		u, p := c.sc.userString(c.image)
		if u != c.wantUser || p != c.wantPart {
			t.Errorf("userString(%+v, %q) = %q %q, want %q %q", c.sc, c.image, u, p, c.wantUser, c.wantPart)
		}
	}
	if err := (securityContext{runAsNonRoot: ptr(true), runAsUser: ptr(int64(0))}).checkRunAsNonRoot(); !errors.Is(err, ErrCreateContainerConfig) {
		t.Errorf("runAsNonRoot with runAsUser 0: %v", err)
	}
	if err := (securityContext{runAsNonRoot: ptr(false), runAsUser: ptr(int64(0))}).checkRunAsNonRoot(); err != nil {
		t.Errorf("runAsNonRoot false: %v", err)
	}
}

// applySpec runs spec options that need no daemon over containerd's
// default spec.
func applySpec(t *testing.T, opts ...oci.SpecOpts) *specs.Spec {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "test")
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: "c"}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCapabilities(t *testing.T) {
	opts, err := capabilityOpts(&corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"net_bind_service", "CAP_CHOWN"}})
	if err != nil {
		t.Fatal(err)
	}
	s := applySpec(t, opts...)
	if got := fmt.Sprint(s.Process.Capabilities.Effective); got != "[CAP_NET_BIND_SERVICE CAP_CHOWN]" {
		t.Errorf("drop ALL, add two: %s", got)
	}
	opts, _ = capabilityOpts(&corev1.Capabilities{Drop: []corev1.Capability{"NET_RAW"}})
	s = applySpec(t, opts...)
	if slices.Contains(s.Process.Capabilities.Bounding, "CAP_NET_RAW") || !slices.Contains(s.Process.Capabilities.Bounding, "CAP_CHOWN") {
		t.Errorf("drop NET_RAW: %v", s.Process.Capabilities.Bounding)
	}
	opts, _ = capabilityOpts(&corev1.Capabilities{Add: []corev1.Capability{"ALL"}, Drop: []corev1.Capability{"CHOWN"}})
	s = applySpec(t, opts...)
	if slices.Contains(s.Process.Capabilities.Bounding, "CAP_CHOWN") || !slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
		t.Errorf("add ALL drop CHOWN: %v", s.Process.Capabilities.Bounding)
	}
}

func TestResourcesSpec(t *testing.T) {
	s := applySpec(t, cgroupResources{shares: 256, quota: 50000, memoryLimit: 1 << 20}.specOpt(true))
	r := s.Linux.Resources
	if *r.CPU.Shares != 256 || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || *r.Memory.Limit != 1<<20 || *r.Memory.Swap != 1<<20 {
		t.Errorf("resources %+v %+v", r.CPU, r.Memory)
	}
	s = applySpec(t, cgroupResources{shares: 2}.specOpt(false))
	if s.Linux.Resources.CPU.Quota != nil || s.Linux.Resources.Memory != nil {
		t.Errorf("unlimited container has limits: %+v", s.Linux.Resources)
	}
}

func TestSeccompAndDefaults(t *testing.T) {
	sec, err := seccompOpt(&corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}, false)
	if err != nil || sec == nil {
		t.Fatal(sec, err)
	}
	s := applySpec(t, withoutDefaultSecuritySettings, sec)
	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno || len(s.Linux.Seccomp.Syscalls) == 0 {
		t.Errorf("RuntimeDefault seccomp: %+v", s.Linux.Seccomp)
	}
	if s.Process.Rlimits != nil {
		t.Errorf("rlimits kept: %v", s.Process.Rlimits)
	}
	if sec, _ := seccompOpt(&corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}, true); sec != nil {
		t.Error("privileged container got a seccomp profile")
	}
	if _, err := seccompOpt(&corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost}, false); !errors.Is(err, ErrCreateContainerConfig) {
		t.Errorf("Localhost profile: %v", err)
	}
}

func TestCheckSubPath(t *testing.T) {
	for p, ok := range map[string]bool{"": true, "a": true, "a/b": true, "a/../b": false, "..": false, "/abs": false, "a/..": false, "..a": true} {
		if err := checkSubPath(p); (err == nil) != ok {
			t.Errorf("checkSubPath(%q) = %v", p, err)
		}
	}
	if !within("/p", "/p/v/x") || within("/p", "/pv") || within("/p", "/") || !within("/p", "/p") {
		t.Error("within")
	}
}

func TestMergeResolvConf(t *testing.T) {
	base := []byte("# comment\nnameserver 10.0.0.1\nsearch example.com\noptions ndots:1 rotate\n")
	got := string(mergeResolvConf(base, []string{"10.0.0.2", "10.0.0.1"}, []string{"svc.local"}, []string{"ndots:5"}))
	want := "nameserver 10.0.0.1\nnameserver 10.0.0.2\nsearch svc.local example.com\noptions ndots:5 rotate\n"
	if got != want {
		t.Errorf("merged:\n%s\nwant:\n%s", got, want)
	}
}

func TestPodHostname(t *testing.T) {
	long := strings.Repeat("a", 62) + "-b"
	for _, c := range []struct {
		pod  api.Pod
		want string
	}{
		{api.Pod{Name: "web-0"}, "web-0"},
		{api.Pod{Name: "web-0", Spec: api.PodSpec{Hostname: "h"}}, "h"},
		{api.Pod{Name: long}, strings.Repeat("a", 62)},
	} {
		if got := podHostname(&c.pod); got != c.want {
			t.Errorf("podHostname(%q) = %q, want %q", c.pod.Name, got, c.want)
		}
	}
}

func TestDockerConfigs(t *testing.T) {
	docs := []api.Sensitive{
		api.Sensitive(`{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"reg.example:5000":{"username":"u2","password":"p2"}}}`),
		api.Sensitive(`{"reg.example:5000":{"auth":"b3RoZXI6eA=="},"legacy.example":{"auth":"bDpw"}}`),
	}
	creds, err := parseDockerConfigs(docs)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"registry-1.docker.io": "user:pass",
		"reg.example:5000":     "u2:p2", // the first document wins
		"legacy.example":       "l:p",
		"other.example":        ":",
	} {
		u, p, _ := creds.lookup(host)
		if u+":"+p != want {
			t.Errorf("creds for %s = %s:%s, want %s", host, u, p, want)
		}
	}
	_, err = parseDockerConfigs([]api.Sensitive{api.Sensitive(`{"auths":{"r":{"auth":"!!!c2VjcmV0"}}}`)})
	if err == nil || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("bad auth: %v", err)
	}
	if _, err := parseDockerConfigs([]api.Sensitive{api.Sensitive(`not json c2VjcmV0`)}); err == nil || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Errorf("not JSON: %v", err)
	}
}

func TestRegistryConfig(t *testing.T) {
	if _, err := newRegistryHosts(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := newRegistryHosts([]v1alpha1.Registry{{Host: "r:5000"}, {Host: "R:5000"}}); err == nil {
		t.Error("duplicate host accepted")
	}
	if _, err := newRegistryHosts([]v1alpha1.Registry{{Host: "r", CAFile: "/nonexistent"}}); err == nil {
		t.Error("missing CA file accepted")
	}
	rh, err := newRegistryHosts([]v1alpha1.Registry{{Host: "r:5000", PlainHTTP: true, Mirrors: []string{"m1:80", "https://m2", "r2:1"}}, {Host: "r2:1", PlainHTTP: true}})
	if err != nil {
		t.Fatal(err)
	}
	for m, want := range map[string]string{"m1:80": "m1:80 https", "https://m2": "m2 https", "http://m3": "m3 http", "r2:1": "r2:1 http"} {
		h, s, _ := rh.endpoint(m)
		if h+" "+s != want {
			t.Errorf("endpoint(%q) = %s %s, want %s", m, h, s, want)
		}
	}
	for ref, want := range map[string]corev1.PullPolicy{
		"berth/echo:1": corev1.PullIfNotPresent, "berth/echo": corev1.PullAlways, "berth/echo:latest": corev1.PullAlways,
		"r:5000/x@sha256:" + strings.Repeat("a", 64): corev1.PullIfNotPresent,
	} {
		if got := defaultPullPolicy(ref); got != want {
			t.Errorf("defaultPullPolicy(%s) = %s, want %s", ref, got, want)
		}
	}
}

func TestStateOf(t *testing.T) {
	created := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	base := func(extra map[string]string) containers.Container {
		l := map[string]string{api.LabelManaged: "true", api.LabelPodUID: "u", "berth.dev/image-id": "sha256:x", "io.containerd.image.config.stop-signal": "SIGTERM"}
		for k, v := range extra {
			l[k] = v
		}
		return containers.Container{ID: "c", Image: "docker.io/x:1", Labels: l, CreatedAt: created}
	}
	started := created.Add(time.Second).Format(time.RFC3339Nano)
	exited := created.Add(2 * time.Second)
	for _, c := range []struct {
		name string
		info containers.Container
		proc *tasktypes.Process
		want string
	}{
		{"created", base(nil), nil, "created 0 0 "},
		{"task created", base(nil), &tasktypes.Process{Status: tasktypes.Status_CREATED}, "created 0 0 "},
		{"running", base(map[string]string{labelStartedAt: started}), &tasktypes.Process{Status: tasktypes.Status_RUNNING, Pid: 42}, "running 42 0 "},
		{"stopped task", base(nil), &tasktypes.Process{Status: tasktypes.Status_STOPPED, ExitStatus: 0, ExitedAt: timestamppb.New(exited)}, "exited 0 0 Completed"},
		{"stopped task, error", base(nil), &tasktypes.Process{Status: tasktypes.Status_STOPPED, ExitStatus: 2}, "exited 0 2 Error"},
		{"recorded exit", base(map[string]string{labelExitCode: "137", labelReason: ReasonOOMKilled, labelFinishedAt: exited.Format(time.RFC3339Nano)}), nil, "exited 0 137 OOMKilled"},
		{"unknown", base(nil), &tasktypes.Process{Status: tasktypes.Status_UNKNOWN}, "unknown 0 0 "},
	} {
		st := stateOf(c.info, c.proc)
		if got := fmt.Sprintf("%s %d %d %s", st.State, st.Pid, st.ExitCode, st.Reason); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
		if _, ok := st.Labels["io.containerd.image.config.stop-signal"]; ok || st.Labels[api.LabelPodUID] != "u" {
			t.Errorf("%s: labels %v", c.name, st.Labels)
		}
		if st.ImageID != "sha256:x" || !st.CreatedAt.Equal(created) {
			t.Errorf("%s: %+v", c.name, st)
		}
		if st.State == agent.StateExited && c.proc == nil && !st.FinishedAt.Equal(exited) {
			t.Errorf("%s: finished at %v", c.name, st.FinishedAt)
		}
	}
}
