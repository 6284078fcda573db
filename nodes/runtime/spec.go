package runtime

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cap"
	"github.com/containerd/containerd/v2/pkg/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

// ErrCreateContainerConfig is a container that cannot be created as
// specified (runAsNonRoot with a root user, a volume not prepared, an
// unsupported setting): the kubelet's CreateContainerConfigError. Retrying
// does not help until the pod or image changes.
var ErrCreateContainerConfig = errors.New("CreateContainerConfigError")

func configError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCreateContainerConfig, fmt.Sprintf(format, args...))
}

// securityContext is a container's effective security context: the pod's
// settings overridden by the container's, as the kubelet computes it.
type securityContext struct {
	runAsUser, runAsGroup    *int64
	runAsNonRoot             *bool
	privileged               bool
	readOnlyRootFilesystem   bool
	allowPrivilegeEscalation *bool
	capabilities             *corev1.Capabilities
	seccomp                  *corev1.SeccompProfile
	supplementalGroups       []int64
	fsGroup                  *int64
}

func effectiveSecurityContext(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) securityContext {
	var sc securityContext
	if pod != nil {
		sc.runAsUser, sc.runAsGroup, sc.runAsNonRoot = pod.RunAsUser, pod.RunAsGroup, pod.RunAsNonRoot
		sc.seccomp = pod.SeccompProfile
		sc.supplementalGroups = pod.SupplementalGroups
		sc.fsGroup = pod.FSGroup
	}
	if c != nil {
		if c.RunAsUser != nil {
			sc.runAsUser = c.RunAsUser
		}
		if c.RunAsGroup != nil {
			sc.runAsGroup = c.RunAsGroup
		}
		if c.RunAsNonRoot != nil {
			sc.runAsNonRoot = c.RunAsNonRoot
		}
		if c.SeccompProfile != nil {
			sc.seccomp = c.SeccompProfile
		}
		sc.privileged = c.Privileged != nil && *c.Privileged
		sc.readOnlyRootFilesystem = c.ReadOnlyRootFilesystem != nil && *c.ReadOnlyRootFilesystem
		sc.allowPrivilegeEscalation = c.AllowPrivilegeEscalation
		sc.capabilities = c.Capabilities
	}
	return sc
}

// checkRunAsNonRoot is the kubelet's check that can be made before the
// image's user is resolved: an explicit runAsUser 0.
func (sc securityContext) checkRunAsNonRoot() error {
	if sc.runAsNonRoot == nil || !*sc.runAsNonRoot {
		return nil
	}
	if sc.runAsUser != nil && *sc.runAsUser == 0 {
		return configError("container's runAsUser breaks non-root policy (runAsNonRoot is set and runAsUser is 0)")
	}
	return nil
}

// userString is the user the container runs as, for oci.WithUser
// ("uid", "uid:gid", "name", "name:group"), and its user part for the
// lookup of supplementary groups in the image's /etc/group.
func (sc securityContext) userString(imageUser string) (user, userPart string) {
	switch {
	case sc.runAsUser != nil:
		user = strconv.FormatInt(*sc.runAsUser, 10)
	case imageUser != "":
		user, _, _ = strings.Cut(imageUser, ":")
		if sc.runAsGroup == nil {
			return imageUser, user
		}
	case sc.runAsGroup != nil:
		user = "0"
	default:
		return "", "root"
	}
	userPart = user
	if sc.runAsGroup != nil {
		user += ":" + strconv.FormatInt(*sc.runAsGroup, 10)
	}
	return user, userPart
}

// processArgs is the container's command line as Kubernetes decides it:
// command replaces the image's entrypoint (and drops its cmd), args replace
// the cmd; $(VAR) references expand from env.
func processArgs(c *corev1.Container, img ocispec.ImageConfig, env map[string]string) ([]string, error) {
	var argv []string
	switch {
	case len(c.Command) > 0:
		argv = append(expandAll(c.Command, env), expandAll(c.Args, env)...)
	case len(c.Args) > 0:
		argv = append(slices.Clone(img.Entrypoint), expandAll(c.Args, env)...)
	default:
		argv = append(slices.Clone(img.Entrypoint), img.Cmd...)
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, configError("container %s: no command specified, and the image has none", c.Name)
	}
	return argv, nil
}

// containerEnv is the image's environment, then HOSTNAME, then the
// container's (each value expanded against the variables before it, as
// the kubelet does), later values replacing earlier ones.
//
// Env values arrive resolved (package reconciler/resolve), but for the
// pod's own addresses, which only the machine knows: a variable whose
// valueFrom is fieldRef status.podIP or status.podIPs takes podIPs'.
func containerEnv(img ocispec.ImageConfig, hostname string, podIPs []string, c *corev1.Container) ([]string, map[string]string) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, kv := range img.Env {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	set("HOSTNAME", hostname)
	// Only the container's own variables are references' targets, as in
	// Kubernetes (the image's are not known to the API).
	own := map[string]string{}
	for _, e := range c.Env {
		v := expand(e.Value, own)
		if f := e.ValueFrom; f != nil && f.FieldRef != nil {
			switch f.FieldRef.FieldPath {
			case "status.podIP":
				v = ""
				if len(podIPs) > 0 {
					v = podIPs[0]
				}
			case "status.podIPs":
				v = strings.Join(podIPs, ",")
			}
		}
		own[e.Name] = v
		set(e.Name, v)
	}
	out := make([]string, len(order))
	for i, k := range order {
		out[i] = k + "=" + vars[k]
	}
	return out, own
}

func expandAll(in []string, env map[string]string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, env)
	}
	return out
}

// expand replaces $(VAR) with VAR's value when VAR is defined, leaves it
// as it is otherwise, and turns $$ into $ (so $$(VAR) stays literal), as
// Kubernetes' expansion does.
func expand(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// CPU and memory → cgroup settings, as the kubelet converts them.
const (
	minShares     = 2
	sharesPerCPU  = 1024
	cfsPeriod     = 100000 // µs
	minQuotaPerio = 1000   // µs
)

type cgroupResources struct {
	shares      uint64
	quota       int64 // 0: none
	memoryLimit int64 // 0: none
}

func resourcesOf(c *corev1.Container) cgroupResources {
	var r cgroupResources
	req, hasReq := c.Resources.Requests[corev1.ResourceCPU]
	lim, hasLim := c.Resources.Limits[corev1.ResourceCPU]
	if !hasReq && hasLim {
		req, hasReq = lim, true // the API server's defaulting
	}
	r.shares = minShares
	if hasReq {
		r.shares = max(uint64(req.MilliValue())*sharesPerCPU/1000, minShares)
	}
	if hasLim && lim.MilliValue() > 0 {
		r.quota = max(lim.MilliValue()*cfsPeriod/1000, minQuotaPerio)
	}
	if m, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		r.memoryLimit = m.Value()
	}
	return r
}

func (res cgroupResources) specOpt(swap bool) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		lr := s.Linux.Resources
		shares := res.shares
		lr.CPU = &specs.LinuxCPU{Shares: &shares}
		if res.quota > 0 {
			q, p := res.quota, uint64(cfsPeriod)
			lr.CPU.Quota, lr.CPU.Period = &q, &p
		}
		if res.memoryLimit > 0 {
			l := res.memoryLimit
			lr.Memory = &specs.LinuxMemory{Limit: &l}
			if swap {
				// No swapping past the limit.
				sw := l
				lr.Memory.Swap = &sw
			}
		}
		return nil
	}
}

// capabilityOpts applies a security context's capabilities over the
// default set, as the CRI plugin does ("ALL" first, then the others).
func capabilityOpts(caps *corev1.Capabilities) ([]oci.SpecOpts, error) {
	if caps == nil {
		return nil, nil
	}
	var opts []oci.SpecOpts
	has := func(list []corev1.Capability) bool {
		return slices.ContainsFunc(list, func(c corev1.Capability) bool { return strings.EqualFold(string(c), "ALL") })
	}
	if has(caps.Add) {
		all, err := cap.Current()
		if err != nil {
			return nil, fmt.Errorf("capabilities: %w", err)
		}
		opts = append(opts, oci.WithCapabilities(all))
	}
	if has(caps.Drop) {
		opts = append(opts, oci.WithCapabilities(nil))
	}
	names := func(list []corev1.Capability) []string {
		var out []string
		for _, c := range list {
			n := strings.ToUpper(string(c))
			if n == "ALL" {
				continue
			}
			if !strings.HasPrefix(n, "CAP_") {
				n = "CAP_" + n
			}
			out = append(out, n)
		}
		return out
	}
	opts = append(opts, oci.WithAddedCapabilities(names(caps.Add)), oci.WithDroppedCapabilities(names(caps.Drop)))
	return opts, nil
}

// withoutAmbientCaps clears ambient capabilities (the CRI plugin's and
// Docker's behaviour).
func withoutAmbientCaps(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	if s.Process != nil && s.Process.Capabilities != nil {
		s.Process.Capabilities.Ambient = nil
	}
	return nil
}

// withoutDefaultSecuritySettings drops the defaults of containerd's spec
// that the CRI plugin drops too: rlimits (inherited instead), seccomp and
// AppArmor (set from the security context).
func withoutDefaultSecuritySettings(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
	s.Process.Rlimits = nil
	s.Process.ApparmorProfile = ""
	s.Linux.Seccomp = nil
	return nil
}

// withUser is oci.WithUser, a user missing from the image's /etc/passwd
// being a configuration error.
func withUser(user string) oci.SpecOpts {
	return func(ctx context.Context, cl oci.Client, c *containers.Container, s *specs.Spec) error {
		if err := oci.WithUser(user)(ctx, cl, c, s); err != nil {
			return configError("user %q: %v", user, err)
		}
		return nil
	}
}

// withGroups appends numeric supplementary groups.
func withGroups(gids []int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		for _, g := range gids {
			if !slices.Contains(s.Process.User.AdditionalGids, uint32(g)) {
				s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, uint32(g))
			}
		}
		return nil
	}
}

// withRunAsNonRoot refuses a container whose resolved user is root. It runs
// after the user has been resolved against the image's /etc/passwd, so a
// named image user is checked by its uid.
func withRunAsNonRoot(sc securityContext, imageUser string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *specs.Spec) error {
		if sc.runAsNonRoot == nil || !*sc.runAsNonRoot || s.Process.User.UID != 0 {
			return nil
		}
		if sc.runAsUser != nil {
			return configError("container's runAsUser breaks non-root policy")
		}
		if imageUser == "" {
			return configError("container has runAsNonRoot and image will run as root")
		}
		return configError("container has runAsNonRoot and image will run as root (image user %q)", imageUser)
	}
}

// seccompOpt applies a seccomp profile: RuntimeDefault is containerd's
// default profile (contrib/seccomp, Docker's); Unconfined or none is no
// filter (Kubernetes' default); Localhost profiles are not supported.
func seccompOpt(p *corev1.SeccompProfile, privileged bool) (oci.SpecOpts, error) {
	if p == nil || privileged {
		return nil, nil
	}
	switch p.Type {
	case corev1.SeccompProfileTypeRuntimeDefault:
		return seccomp.WithDefaultProfile(), nil
	case corev1.SeccompProfileTypeUnconfined:
		return nil, nil
	default:
		return nil, configError("seccomp profile type %q is not supported", p.Type)
	}
}

// mountPropagation maps a volume mount's propagation to mount options.
func mountPropagation(p *corev1.MountPropagationMode, privileged bool) (string, error) {
	if p == nil {
		return "rprivate", nil
	}
	switch *p {
	case corev1.MountPropagationNone:
		return "rprivate", nil
	case corev1.MountPropagationHostToContainer:
		return "rslave", nil
	case corev1.MountPropagationBidirectional:
		if !privileged {
			return "", configError("Bidirectional mount propagation needs a privileged container")
		}
		return "rshared", nil
	}
	return "", configError("unknown mount propagation %q", *p)
}

// checkSubPath refuses subPaths that are absolute or climb out of their
// volume (the kubelet's validation); symlinks are dealt with when the
// subPath is opened inside the volume.
func checkSubPath(p string) error {
	if p == "" {
		return nil
	}
	if path.IsAbs(p) || strings.HasPrefix(p, "/") {
		return configError("subPath %q is absolute", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return configError("subPath %q climbs out of its volume", p)
		}
	}
	return nil
}

// podEtcMounts are the pod's hosts, hostname and resolv.conf files,
// unless the container mounts something of its own there.
func podEtcMounts(podDir string, readOnly bool, taken func(string) bool) []specs.Mount {
	var out []specs.Mount
	for _, f := range []string{"hosts", "hostname", "resolv.conf"} {
		dest := "/etc/" + f
		if taken(dest) {
			continue
		}
		mode := "rw"
		if readOnly {
			mode = "ro"
		}
		out = append(out, specs.Mount{
			Destination: dest,
			Type:        "bind",
			Source:      etcDir(podDir) + "/" + f,
			Options:     []string{"rbind", "rprivate", mode},
		})
	}
	return out
}

// labelsOf returns the labels tying a container to its pod.
func labelsOf(pod *api.Pod, c *corev1.Container, attempt int32) map[string]string {
	return map[string]string{
		api.LabelManaged:   "true",
		api.LabelPodUID:    pod.UID,
		api.LabelPodName:   pod.Key(),
		api.LabelContainer: c.Name,
		api.LabelAttempt:   strconv.Itoa(int(attempt)),
		api.LabelPodHash:   pod.Hash,
	}
}
