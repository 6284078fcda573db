package schedule

import (
	"math"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The requests kube-scheduler assumes, for scoring only, of a container
// that sets none, so that pods without requests still spread.
const (
	defaultMilliCPURequest int64 = 100               // 0.1 core
	defaultMemoryRequest   int64 = 200 * 1024 * 1024 // 200 MiB
)

// amounts are resource quantities in the scheduler's integer units:
// millicores for cpu, bytes for memory and ephemeral storage, plain values
// for everything else (pods, extended resources, hugepages).
type amounts struct {
	cpu, memory, ephemeral int64
	other                  map[corev1.ResourceName]int64
}

func amountsOf(l corev1.ResourceList) amounts {
	var a amounts
	for name, q := range l {
		a.set(name, q)
	}
	return a
}

func (a *amounts) set(name corev1.ResourceName, q resource.Quantity) {
	switch name {
	case corev1.ResourceCPU:
		a.cpu = q.MilliValue()
	case corev1.ResourceMemory:
		a.memory = q.Value()
	case corev1.ResourceEphemeralStorage:
		a.ephemeral = q.Value()
	default:
		if a.other == nil {
			a.other = map[corev1.ResourceName]int64{}
		}
		a.other[name] = q.Value()
	}
}

func (a *amounts) add(b amounts) {
	a.cpu += b.cpu
	a.memory += b.memory
	a.ephemeral += b.ephemeral
	for name, v := range b.other {
		if a.other == nil {
			a.other = map[corev1.ResourceName]int64{}
		}
		a.other[name] += v
	}
}

// max raises each quantity of a to b's where b's is larger.
func (a *amounts) max(b amounts) {
	a.cpu = max(a.cpu, b.cpu)
	a.memory = max(a.memory, b.memory)
	a.ephemeral = max(a.ephemeral, b.ephemeral)
	for name, v := range b.other {
		if a.other == nil {
			a.other = map[corev1.ResourceName]int64{}
		}
		a.other[name] = max(a.other[name], v)
	}
}

// list converts back to a ResourceList, leaving out zero quantities.
func (a amounts) list() corev1.ResourceList {
	l := corev1.ResourceList{}
	if a.cpu != 0 {
		l[corev1.ResourceCPU] = *resource.NewMilliQuantity(a.cpu, resource.DecimalSI)
	}
	if a.memory != 0 {
		l[corev1.ResourceMemory] = *resource.NewQuantity(a.memory, resource.BinarySI)
	}
	if a.ephemeral != 0 {
		l[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(a.ephemeral, resource.BinarySI)
	}
	for name, v := range a.other {
		if v != 0 {
			l[name] = *resource.NewQuantity(v, resource.DecimalSI)
		}
	}
	return l
}

// PodRequests returns the effective resource requests of a pod, as
// Kubernetes computes them for scheduling: the sum of its containers and of
// its sidecars (init containers with restartPolicy Always), or the largest
// single init container together with the sidecars started before it,
// whichever is more; pod-level requests (spec.resources) replace the cpu and
// memory of that; spec.overhead is added on top. Zero quantities are left
// out.
func PodRequests(spec *corev1.PodSpec) corev1.ResourceList {
	if spec == nil {
		return corev1.ResourceList{}
	}
	return podAmounts(spec, false).list()
}

// podAmounts computes a pod's effective requests. With nonZero, containers
// that do not set a cpu or memory request count kube-scheduler's defaults
// for it, as its scoring does (NodeInfo.NonZeroRequested).
func podAmounts(spec *corev1.PodSpec, nonZero bool) amounts {
	podLevel := corev1.ResourceList(nil)
	if spec.Resources != nil {
		podLevel = spec.Resources.Requests
	}
	_, podCPU := podLevel[corev1.ResourceCPU]
	_, podMemory := podLevel[corev1.ResourceMemory]
	defaultCPU, defaultMemory := nonZero, nonZero
	if podCPU || podMemory {
		// With pod-level requests, containers get a default only for a
		// resource that neither the pod nor any container sets.
		defaultCPU = nonZero && !podCPU && !anyContainerSets(spec, corev1.ResourceCPU)
		defaultMemory = nonZero && !podMemory && !anyContainerSets(spec, corev1.ResourceMemory)
	}
	return podLevelAndOverhead(aggregateContainers(spec, defaultCPU, defaultMemory), spec, podLevel)
}

func podLevelAndOverhead(a amounts, spec *corev1.PodSpec, podLevel corev1.ResourceList) amounts {
	if q, ok := podLevel[corev1.ResourceCPU]; ok {
		a.cpu = q.MilliValue()
	}
	if q, ok := podLevel[corev1.ResourceMemory]; ok {
		a.memory = q.Value()
	}
	if len(spec.Overhead) > 0 {
		a.add(amountsOf(spec.Overhead))
	}
	return a
}

func anyContainerSets(spec *corev1.PodSpec, name corev1.ResourceName) bool {
	for _, cs := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for i := range cs {
			if _, ok := cs[i].Resources.Requests[name]; ok {
				return true
			}
		}
	}
	return false
}

// aggregateContainers is Kubernetes' AggregateContainerRequests: sidecars
// run alongside the containers and add up with them; each ordinary init
// container runs alone, beside the sidecars started before it.
func aggregateContainers(spec *corev1.PodSpec, defaultCPU, defaultMemory bool) amounts {
	var sum amounts
	for i := range spec.Containers {
		sum.add(containerAmounts(&spec.Containers[i], defaultCPU, defaultMemory))
	}
	var sidecars, initMax amounts
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		r := containerAmounts(c, defaultCPU, defaultMemory)
		if isSidecar(c) {
			sum.add(r)
			sidecars.add(r)
			initMax.max(sidecars)
			continue
		}
		r.add(sidecars)
		initMax.max(r)
	}
	sum.max(initMax)
	return sum
}

func isSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

func containerAmounts(c *corev1.Container, defaultCPU, defaultMemory bool) amounts {
	a := amountsOf(c.Resources.Requests)
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok && defaultCPU {
		a.cpu = defaultMilliCPURequest
	}
	if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok && defaultMemory {
		a.memory = defaultMemoryRequest
	}
	return a
}

// resourcesFilter is NodeResourcesFit's filter: the machine must have room
// for one more pod and for each resource the pod requests. Every shortage
// is a reason of its own.
func resourcesFilter(c *cycle, m *machineState) []string {
	var reasons []string
	if int64(len(m.pods))+1 > m.allowedPods {
		reasons = append(reasons, "too many pods")
	}
	req, alloc, used := c.pod.requests, m.allocatable, m.requested
	if req.cpu > 0 && req.cpu > alloc.cpu-used.cpu {
		reasons = append(reasons, "insufficient cpu")
	}
	if req.memory > 0 && req.memory > alloc.memory-used.memory {
		reasons = append(reasons, "insufficient memory")
	}
	if req.ephemeral > 0 && req.ephemeral > alloc.ephemeral-used.ephemeral {
		reasons = append(reasons, "insufficient ephemeral-storage")
	}
	for _, name := range c.pod.otherResources {
		if name == corev1.ResourcePods {
			continue
		}
		if v := req.other[name]; v > 0 && v > alloc.other[name]-used.other[name] {
			reasons = append(reasons, "insufficient "+string(name))
		}
	}
	return reasons
}

// sortedResourceNames returns the names of a's other resources in order.
func sortedResourceNames(a amounts) []corev1.ResourceName {
	names := make([]corev1.ResourceName, 0, len(a.other))
	for name := range a.other {
		names = append(names, name)
	}
	slices.SortFunc(names, func(x, y corev1.ResourceName) int { return strings.Compare(string(x), string(y)) })
	return names
}

// leastAllocatedScore is NodeResourcesFit's default score: the share of
// cpu and memory still free once the pod is placed, averaged with equal
// weights, counting kube-scheduler's default requests for containers that
// set none.
func leastAllocatedScore(c *cycle, feasible []*machineState, out []int64) {
	for i, m := range feasible {
		var sum, n int64
		for _, r := range [2][2]int64{
			{m.nonZeroCPU + c.pod.nonZeroCPU, m.allocatable.cpu},
			{m.nonZeroMemory + c.pod.nonZeroMemory, m.allocatable.memory},
		} {
			requested, capacity := r[0], r[1]
			if capacity == 0 {
				continue
			}
			n++
			if requested <= capacity {
				sum += (capacity - requested) * maxScore / capacity
			}
		}
		if n > 0 {
			out[i] = sum / n
		}
	}
}

// balancedAllocationScore is NodeResourcesBalancedAllocation: machines
// whose cpu and memory would be used in equal shares score best. Pods that
// request neither are not scored by it, as in kube-scheduler, so that they
// do not all crowd onto one machine.
func balancedAllocationScore(c *cycle, feasible []*machineState, out []int64) {
	if c.pod.requests.cpu == 0 && c.pod.requests.memory == 0 {
		return
	}
	for i, m := range feasible {
		var fractions [2]float64
		n := 0
		for _, r := range [2][2]int64{
			{m.requested.cpu + c.pod.requests.cpu, m.allocatable.cpu},
			{m.requested.memory + c.pod.requests.memory, m.allocatable.memory},
		} {
			if r[1] == 0 {
				continue
			}
			fractions[n] = min(float64(r[0])/float64(r[1]), 1)
			n++
		}
		std := 0.0
		if n == 2 {
			std = math.Abs(fractions[0]-fractions[1]) / 2
		}
		out[i] = int64((1 - std) * maxScore)
	}
}
