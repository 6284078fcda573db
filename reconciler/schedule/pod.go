package schedule

import (
	"errors"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// podInfo is a pod with everything the filters and scores need worked out
// once: its requests, host ports, and its selectors compiled.
type podInfo struct {
	key      PodKey
	labels   labels.Set
	owner    string
	nodeName string
	machine  *machineState // once placed

	requests       amounts
	otherResources []corev1.ResourceName // requests.other's names, in order
	nonZeroCPU     int64
	nonZeroMemory  int64
	ports          []hostPort

	tolerations []corev1.Toleration
	node        nodeMatcher
	// Pod (anti-)affinity terms; the preferred ones carry their weight.
	affinity, antiAffinity                   []podTerm
	preferredAffinity, preferredAntiAffinity []podTerm
	// Topology spread constraints by whenUnsatisfiable; softSystem says
	// soft holds the system defaults rather than the pod's own.
	hard, soft []spreadConstraint
	softSystem bool
}

var emptySpec corev1.PodSpec

// newPodInfo compiles a pod. It always returns a podInfo; an error says
// that some of the pod's selectors do not parse, and those are left out.
func newPodInfo(p *Pod, o options) (*podInfo, error) {
	spec := p.Spec
	if spec == nil {
		spec = &emptySpec
	}
	info := &podInfo{
		key:         p.Key(),
		labels:      labels.Set(p.Labels),
		owner:       p.Owner,
		nodeName:    spec.NodeName,
		requests:    podAmounts(spec, false),
		ports:       podHostPorts(spec),
		tolerations: spec.Tolerations,
	}
	nz := podAmounts(spec, true)
	info.nonZeroCPU, info.nonZeroMemory = nz.cpu, nz.memory
	info.otherResources = sortedResourceNames(info.requests)

	var errs []error
	var err error
	info.node, err = compileNodeMatcher(spec)
	errs = append(errs, err)
	errs = append(errs, info.compilePodTerms(spec.Affinity, o))
	errs = append(errs, info.compileSpread(spec.TopologySpreadConstraints))
	return info, errors.Join(errs...)
}

// hasTerms says whether the pod has pod (anti-)affinity terms that other
// pods must be checked against.
func (p *podInfo) hasTerms() bool {
	return len(p.affinity)+len(p.antiAffinity)+len(p.preferredAffinity)+len(p.preferredAntiAffinity) > 0
}
