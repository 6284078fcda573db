package reconciler

import (
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/render"
)

// consequence says in one line what a change does to running pods, or
// returns "". from and to are the two sides of the change (one nil for a
// create or delete); cons finds the workloads that use a ConfigMap or
// Secret.
func consequence(c *Change, from, to *render.Object, cons *consumerIndex) string {
	switch c.Action {
	case ActionCreate:
		return created(to)
	case ActionDelete:
		return deleted(from)
	case ActionReplace:
		return replaced(c, from, to, cons)
	}
	changed := func(prefix string) bool {
		for _, f := range c.Fields {
			if hasPathPrefix(f.Path, prefix) {
				return true
			}
		}
		return false
	}
	switch v := to.Obj.(type) {
	case *appsv1.Deployment:
		scale := ""
		if changed("spec.replicas") {
			scale = fmt.Sprintf("scale %d → %d", replicas(from.Obj.(*appsv1.Deployment).Spec.Replicas), replicas(v.Spec.Replicas))
		}
		if !changed("spec.template") {
			return scale
		}
		s := deploymentRollout(v)
		if v.Spec.Paused {
			s = "rollout paused: pods keep the old template until spec.paused is false"
		}
		if scale != "" {
			s += " (" + scale + ")"
		}
		return s
	case *appsv1.StatefulSet:
		scale := ""
		if changed("spec.replicas") {
			scale = fmt.Sprintf("scale %d → %d", replicas(from.Obj.(*appsv1.StatefulSet).Spec.Replicas), replicas(v.Spec.Replicas))
		}
		if !changed("spec.template") {
			return scale
		}
		s := statefulSetRollout(v)
		if scale != "" {
			s += " (" + scale + ")"
		}
		return s
	case *appsv1.DaemonSet:
		if changed("spec.template") {
			return daemonSetRollout(v)
		}
	case *corev1.Pod:
		return podImages(from.Obj.(*corev1.Pod), v)
	case *batchv1.Job:
		if changed("spec.suspend") {
			if v.Spec.Suspend != nil && *v.Spec.Suspend {
				return "the Job is suspended: its running pods stop"
			}
			return "the Job resumes"
		}
	case *batchv1.CronJob:
		switch {
		case changed("spec.suspend") && v.Spec.Suspend != nil && *v.Spec.Suspend:
			return "no new runs until spec.suspend is false; running Jobs continue"
		case changed("spec.suspend"):
			return "runs resume on schedule"
		case changed("spec.jobTemplate"):
			return "the next run uses the new template; running Jobs continue"
		}
	case *corev1.Service:
		if changed("spec.selector") {
			return "endpoints move"
		}
	case *corev1.ConfigMap, *corev1.Secret:
		return cons.lookup(c.Key()).describe(false)
	}
	return ""
}

func created(o *render.Object) string {
	switch v := o.Obj.(type) {
	case *appsv1.Deployment:
		return pods(replicas(v.Spec.Replicas)) + " start"
	case *appsv1.StatefulSet:
		if v.Spec.PodManagementPolicy == appsv1.ParallelPodManagement {
			return pods(replicas(v.Spec.Replicas)) + " start"
		}
		return pods(replicas(v.Spec.Replicas)) + " start, one ordinal at a time"
	case *appsv1.DaemonSet:
		return "a pod starts on every eligible machine"
	case *corev1.Pod:
		return "1 pod starts"
	case *batchv1.Job:
		if v.Spec.Suspend != nil && *v.Spec.Suspend {
			return "the Job waits, suspended"
		}
		return "the Job runs"
	case *batchv1.CronJob:
		return fmt.Sprintf("runs on schedule %q", v.Spec.Schedule)
	}
	return ""
}

func deleted(o *render.Object) string {
	switch v := o.Obj.(type) {
	case *appsv1.Deployment:
		return pods(replicas(v.Spec.Replicas)) + " stop"
	case *appsv1.StatefulSet:
		s := pods(replicas(v.Spec.Replicas)) + " stop"
		if r := v.Spec.PersistentVolumeClaimRetentionPolicy; r != nil && r.WhenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
			return s + "; their volume claims are deleted"
		}
		return s + "; their volume claims are kept"
	case *appsv1.DaemonSet:
		return "its pod stops on every machine"
	case *corev1.Pod:
		return "1 pod stops"
	case *batchv1.Job:
		return "its running pods stop"
	case *batchv1.CronJob:
		return "no further runs; its Jobs and their pods are deleted"
	case *corev1.Namespace:
		return "everything in namespace " + v.Name + " is deleted with it"
	case *corev1.PersistentVolumeClaim:
		return "the volume is released; the StorageClass's reclaimPolicy decides whether its data is kept"
	}
	return ""
}

func replaced(c *Change, from, to *render.Object, cons *consumerIndex) string {
	switch to.Obj.(type) {
	case *corev1.Pod:
		return "pod is deleted and created again"
	case *appsv1.Deployment:
		return recreated(replicas(from.Obj.(*appsv1.Deployment).Spec.Replicas))
	case *appsv1.StatefulSet:
		s := recreated(replicas(from.Obj.(*appsv1.StatefulSet).Spec.Replicas))
		if r := from.Obj.(*appsv1.StatefulSet).Spec.PersistentVolumeClaimRetentionPolicy; r != nil && r.WhenDeleted == appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
			return s + "; their volume claims are deleted"
		}
		return s + "; their volume claims are kept"
	case *appsv1.DaemonSet:
		return "its pod is deleted and created again on every machine"
	case *batchv1.Job:
		return "the Job is deleted and runs again"
	case *corev1.Service:
		return "the Service is deleted and created again; its cluster IP changes"
	case *corev1.PersistentVolumeClaim:
		return "a new volume replaces the old one; its data is not carried over"
	case *corev1.ConfigMap, *corev1.Secret:
		// The kubelet stops watching an immutable ConfigMap or Secret:
		// mounted files are not updated either.
		return cons.lookup(c.Key()).describe(true)
	}
	return ""
}

// recreated says that the n pods of a replaced workload go too.
func recreated(n int32) string {
	if n == 1 {
		return "its pod is deleted and created again"
	}
	return fmt.Sprintf("its %d pods are deleted and created again", n)
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func pods(n int32) string {
	if n == 1 {
		return "1 pod"
	}
	return fmt.Sprintf("%d pods", n)
}

// noPods is the consequence of a new template when no replica runs.
const noPods = "no pod runs (replicas 0): pods take the new template when scaled up"

// deploymentRollout describes the rollout of a Deployment's new template,
// with maxSurge and maxUnavailable resolved against replicas as the
// Deployment controller does: surge rounds up, unavailable down, and when
// both come to 0, maxUnavailable is 1.
func deploymentRollout(d *appsv1.Deployment) string {
	n := replicas(d.Spec.Replicas)
	if n == 0 {
		return noPods
	}
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return "recreate " + pods(n)
	}
	var maxSurge, maxUnavailable *intstr.IntOrString
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil {
		maxSurge, maxUnavailable = ru.MaxSurge, ru.MaxUnavailable
	}
	surge, unavailable := resolveFenceposts(maxSurge, maxUnavailable, n)
	return fmt.Sprintf("rolling update of %s: maxSurge %d, maxUnavailable %d", pods(n), surge, unavailable)
}

// resolveFenceposts is the Deployment controller's function of the same
// name (k8s.io/kubernetes pkg/controller/deployment/util).
func resolveFenceposts(maxSurge, maxUnavailable *intstr.IntOrString, desired int32) (int, int) {
	zero := intstr.FromInt32(0)
	surge, err := intstr.GetScaledValueFromIntOrPercent(intstr.ValueOrDefault(maxSurge, zero), int(desired), true)
	if err != nil {
		surge = 0
	}
	unavailable, err := intstr.GetScaledValueFromIntOrPercent(intstr.ValueOrDefault(maxUnavailable, zero), int(desired), false)
	if err != nil {
		unavailable = 0
	}
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return surge, unavailable
}

func statefulSetRollout(s *appsv1.StatefulSet) string {
	n := replicas(s.Spec.Replicas)
	if n == 0 {
		return noPods
	}
	if s.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
		return "OnDelete: " + pods(n) + " take the new template only when deleted"
	}
	out := "rolling update of " + pods(n) + " from the highest ordinal"
	if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil && *ru.Partition > 0 {
		p := *ru.Partition
		if p >= n {
			return fmt.Sprintf("no pod updated: partition %d leaves all %s on the old template", p, pods(n))
		}
		out += fmt.Sprintf(", ordinals %d and up only (partition %d)", p, p)
	}
	return out
}

func daemonSetRollout(d *appsv1.DaemonSet) string {
	if d.Spec.UpdateStrategy.Type == appsv1.OnDeleteDaemonSetStrategyType {
		return "OnDelete: pods take the new template only when deleted"
	}
	unavailable, surge := intstr.FromInt32(1), intstr.FromInt32(0)
	if ru := d.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		unavailable = *intstr.ValueOrDefault(ru.MaxUnavailable, unavailable)
		surge = *intstr.ValueOrDefault(ru.MaxSurge, surge)
	}
	if surge.String() != "0" {
		return fmt.Sprintf("rolling update on every eligible machine (maxSurge %s, maxUnavailable %s)", surge.String(), unavailable.String())
	}
	return fmt.Sprintf("rolling update on every eligible machine (maxUnavailable %s)", unavailable.String())
}

// podImages names the containers of a Pod updated in place that restart
// with a new image.
func podImages(old, cur *corev1.Pod) string {
	images := map[string]string{}
	for _, c := range append(slices.Clone(old.Spec.InitContainers), old.Spec.Containers...) {
		images[c.Name] = c.Image
	}
	var names []string
	for _, c := range append(slices.Clone(cur.Spec.InitContainers), cur.Spec.Containers...) {
		if img, ok := images[c.Name]; ok && img != c.Image {
			names = append(names, c.Name)
		}
	}
	switch len(names) {
	case 0:
		return ""
	case 1:
		return "container " + names[0] + " restarts with its new image"
	}
	return "containers " + strings.Join(names, ", ") + " restart with their new images"
}

// consumerIndex finds the workloads of a desired state that use each
// ConfigMap and Secret. It is built on first use, once per Diff.
type consumerIndex struct {
	d     *render.Desired
	byKey map[render.Key]*consumers
}

// consumers are the workloads (as "Kind ns/name") that use one ConfigMap
// or Secret: through a mounted volume, which the kubelet updates in place,
// or through env, envFrom or a subPath mount, which a container sees only
// when it starts.
type consumers struct {
	files, restart []string
}

func consumerIndexFor(d *render.Desired) *consumerIndex {
	return &consumerIndex{d: d}
}

func (ci *consumerIndex) lookup(k render.Key) *consumers {
	if ci.byKey == nil {
		ci.build()
	}
	return ci.byKey[k]
}

func (ci *consumerIndex) build() {
	ci.byKey = map[render.Key]*consumers{}
	if ci.d == nil {
		return
	}
	add := func(kind, ns, name, ref string, files bool) {
		k := render.Key{Kind: kind, Namespace: ns, Name: name}
		c := ci.byKey[k]
		if c == nil {
			c = &consumers{}
			ci.byKey[k] = c
		}
		list := &c.restart
		if files {
			list = &c.files
		}
		if n := len(*list); n == 0 || (*list)[n-1] != ref {
			*list = append(*list, ref)
		}
	}
	for _, o := range ci.d.Objects {
		_, spec, _, ok := render.PodTemplate(o)
		if !ok {
			continue
		}
		ref, ns := o.Ref(), o.Namespace
		type source struct{ kind, name string }
		volumes := map[string][]source{}
		for _, v := range spec.Volumes {
			switch {
			case v.ConfigMap != nil:
				volumes[v.Name] = append(volumes[v.Name], source{"ConfigMap", v.ConfigMap.Name})
			case v.Secret != nil:
				volumes[v.Name] = append(volumes[v.Name], source{"Secret", v.Secret.SecretName})
			case v.Projected != nil:
				for _, p := range v.Projected.Sources {
					if p.ConfigMap != nil {
						volumes[v.Name] = append(volumes[v.Name], source{"ConfigMap", p.ConfigMap.Name})
					}
					if p.Secret != nil {
						volumes[v.Name] = append(volumes[v.Name], source{"Secret", p.Secret.Name})
					}
				}
			}
		}
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			for _, m := range c.VolumeMounts {
				inPlace := m.SubPath == "" && m.SubPathExpr == ""
				for _, s := range volumes[m.Name] {
					add(s.kind, ns, s.name, ref, inPlace)
				}
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					add("ConfigMap", ns, e.ConfigMapRef.Name, ref, false)
				}
				if e.SecretRef != nil {
					add("Secret", ns, e.SecretRef.Name, ref, false)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					add("ConfigMap", ns, r.Name, ref, false)
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					add("Secret", ns, r.Name, ref, false)
				}
			}
		}
	}
	for _, c := range ci.byKey {
		c.files = sortedUnique(c.files)
		c.restart = sortedUnique(c.restart)
	}
}

func sortedUnique(s []string) []string {
	slices.Sort(s)
	return slices.Compact(s)
}

// maxNamed is how many workloads a consequence names before "and N more".
const maxNamed = 3

// describe says which workloads see a change of the ConfigMap or Secret.
// When noneInPlace, mounted files are not updated either.
func (c *consumers) describe(noneInPlace bool) string {
	if c == nil {
		return ""
	}
	files, restart := c.files, c.restart
	if noneInPlace {
		restart = sortedUnique(append(slices.Clone(restart), files...))
		files = nil
	}
	var parts []string
	if len(files) > 0 {
		parts = append(parts, "files update in place for "+names(files))
	}
	if len(restart) > 0 {
		verb := " sees it only after a restart"
		if len(restart) > 1 {
			verb = " see it only after a restart"
		}
		parts = append(parts, names(restart)+verb)
	}
	return strings.Join(parts, "; ")
}

func names(refs []string) string {
	if len(refs) <= maxNamed {
		return strings.Join(refs, ", ")
	}
	return strings.Join(refs[:maxNamed], ", ") + fmt.Sprintf(" and %d more", len(refs)-maxNamed)
}
