package resolve

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

// Kinds of resolution error, for errors.Is. Every error Pod returns wraps
// one of them.
var (
	// ErrMissingReference: a ConfigMap, Secret or key the pod needs (not
	// marked optional) is not in the repository.
	ErrMissingReference = errors.New("not found")
	// ErrNotSupported: the pod uses something berth cannot provide on a
	// machine (a persistentVolumeClaim volume, a serviceAccountToken
	// projection, a fileKeyRef, ...).
	ErrNotSupported = errors.New("not supported")
	// ErrInvalid: the pod asks for something Kubernetes would refuse (an
	// unknown fieldPath, a bad divisor, a file path with "..", ...).
	ErrInvalid = errors.New("invalid")
)

// Machine is what a pod learns about the machine it runs on.
type Machine struct {
	// Name is spec.nodeName.
	Name string
	// Addresses are the machine's IP addresses, the primary first:
	// status.hostIP is the first, status.hostIPs all of them.
	Addresses []string
	// Allocatable stands in for a container's unset cpu, memory and
	// ephemeral-storage limits in resourceFieldRefs, as on a kubelet.
	Allocatable corev1.ResourceList
}

// Input is one pod to resolve.
type Input struct {
	Namespace string // "" means "default"
	Name      string
	// UID is the pod's incarnation, decided by the caller; metadata.uid
	// fieldRefs see it.
	UID string
	// Labels and Annotations are the pod's metadata: what the agent is
	// given and what metadata.labels and metadata.annotations fieldRefs
	// see. For a workload's pod they include what its controller adds.
	Labels      map[string]string
	Annotations map[string]string
	// Spec is the pod's spec as written: a Pod's, or a workload's
	// template with its controller's per-pod changes. It is not modified.
	Spec *corev1.PodSpec
	// Hash, when set, becomes the pod's hash: a workload controller
	// passes TemplateHash of its template, so that labels it adds (like
	// pod-template-hash) do not change it. When empty, the hash is
	// TemplateHash of Labels, Annotations and Spec.
	Hash string
	// Machine is where the pod runs.
	Machine Machine
	// Sources holds the ConfigMaps and Secrets the pod may refer to.
	Sources *Sources
}

// Result is a resolved pod.
type Result struct {
	Pod api.Pod
	// Warnings are problems Kubernetes tolerates: envFrom keys skipped as
	// invalid variable names, image pull secrets that are missing or of
	// another type. They name objects and keys, never values.
	Warnings []string
}

// String names the pod and counts warnings; it never prints the pod's
// content, which may hold Secret data.
func (r Result) String() string {
	return fmt.Sprintf("resolve.Result{pod %s hash %s, %d warnings}", r.Pod.Key(), r.Pod.Hash, len(r.Warnings))
}

// GoString is String, so that %#v does not print Secret data.
func (r Result) GoString() string { return r.String() }

// Pod resolves a pod for its machine. Every problem found is reported, as
// one error each ("pod ns/name: container web: env DB_PASSWORD: secret
// db-creds key password: not found"), joined with errors.Join; the Result
// is then incomplete and must not be sent to an agent.
//
// Env values are final: references between variables ($(VAR)) are
// expanded here, and every "$" the runtime must not expand again is
// written "$$", so the agent's expansion gives back exactly these values.
// The one exception is status.podIP and status.podIPs, which are not
// known before the agent wires the pod's network: such a variable keeps
// its valueFrom.fieldRef for the agent to fill, and a reference to it
// stays a $(VAR) for the agent to expand.
func Pod(in *Input) (Result, error) {
	r := resolver{in: in, ns: in.Namespace}
	if r.ns == "" {
		r.ns = "default"
	}
	r.pod = "pod " + r.ns + "/" + in.Name
	s := in.Spec
	if s == nil {
		s = &corev1.PodSpec{}
		r.fail("", fmt.Errorf("spec is missing: %w", ErrInvalid))
	}
	hash := in.Hash
	if hash == "" {
		hash = PodHash(in.Labels, in.Annotations, s)
	}
	out := api.Pod{
		Namespace:   r.ns,
		Name:        in.Name,
		UID:         in.UID,
		Hash:        hash,
		Labels:      maps.Clone(in.Labels),
		Annotations: maps.Clone(in.Annotations),
		Spec: api.PodSpec{
			RestartPolicy:                 s.RestartPolicy,
			TerminationGracePeriodSeconds: clonePtr(s.TerminationGracePeriodSeconds),
			ActiveDeadlineSeconds:         clonePtr(s.ActiveDeadlineSeconds),
			SecurityContext:               s.SecurityContext.DeepCopy(),
			Hostname:                      s.Hostname,
			Subdomain:                     s.Subdomain,
			HostNetwork:                   s.HostNetwork,
			DNSConfig:                     s.DNSConfig.DeepCopy(),
		},
	}
	if s.DNSPolicy != corev1.DNSClusterFirst {
		// Omitted is ClusterFirst, the default: sets stay as they were.
		out.Spec.DNSPolicy = s.DNSPolicy
	}
	out.Spec.InitContainers = r.containers("init container", s.InitContainers, s)
	out.Spec.Containers = r.containers("container", s.Containers, s)
	out.Spec.Volumes = r.volumes(s)
	out.Spec.ImagePullSecrets = r.pullSecrets(s.ImagePullSecrets)
	return Result{Pod: out, Warnings: r.warnings}, errors.Join(r.errs...)
}

// resolver gathers the problems of one pod.
type resolver struct {
	in       *Input
	ns       string
	pod      string // "pod ns/name"
	errs     []error
	warnings []string
}

// fail records a problem at where ("container web: env X"), wrapping err.
func (r *resolver) fail(where string, err error) {
	if where == "" {
		r.errs = append(r.errs, fmt.Errorf("%s: %w", r.pod, err))
		return
	}
	r.errs = append(r.errs, fmt.Errorf("%s: %s: %w", r.pod, where, err))
}

// missing records a reference to a ConfigMap, Secret or key that is not
// there, unless the reference is optional. what names it
// ("secret %s key %s").
func (r *resolver) missing(where string, optional *bool, what string, args ...any) {
	if !isTrue(optional) {
		r.fail(where, fmt.Errorf(what+": %w", append(args, ErrMissingReference)...))
	}
}

func (r *resolver) warn(where, format string, args ...any) {
	r.warnings = append(r.warnings, r.pod+": "+where+": "+fmt.Sprintf(format, args...))
}

func (r *resolver) containers(kind string, cs []corev1.Container, s *corev1.PodSpec) []corev1.Container {
	if cs == nil {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i := range cs {
		c := cs[i] // shallow: env and envFrom are replaced, not copied
		c.Env, c.EnvFrom = nil, nil
		c.DeepCopyInto(&out[i])
		out[i].Env = r.env(kind+" "+c.Name, &cs[i], s)
	}
	return out
}

// pullSecrets turns imagePullSecrets into docker config JSON documents.
// As on a kubelet, a missing Secret or one of another type is only a
// warning: the pull may still succeed (a public image).
func (r *resolver) pullSecrets(refs []corev1.LocalObjectReference) []api.Sensitive {
	var out []api.Sensitive
	for i, ref := range refs {
		if ref.Name == "" {
			continue
		}
		where := fmt.Sprintf("imagePullSecrets[%d]", i)
		sec := r.in.Sources.secret(r.ns, ref.Name)
		if sec == nil {
			r.warn(where, "secret %s not found; pulls go without its credentials", ref.Name)
			continue
		}
		doc, err := dockerConfigJSON(sec)
		if err != nil {
			r.warn(where, "secret %s: %v; pulls go without its credentials", ref.Name, err)
			continue
		}
		out = append(out, doc)
	}
	return out
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// quoteName quotes a name for a message only when it would otherwise be
// hard to read (empty, or with spaces or punctuation).
func quoteName(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"'[]:=") {
		return fmt.Sprintf("%q", s)
	}
	return s
}
