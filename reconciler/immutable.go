package reconciler

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/render"
)

// immutable returns why an update of from into to, changing fields, would
// be refused by Kubernetes and must be a replace instead; or "". The rules
// are the API server's, kept simple:
//
//   - Pod: nothing in spec may change except the image of an existing
//     container or init container, activeDeadlineSeconds, and tolerations
//     appended at the end. (Kubernetes also allows resizing resources
//     through a subresource and removing scheduling gates; berth does
//     not.)
//   - Deployment, StatefulSet, DaemonSet, Job: spec.selector. Job: also
//     spec.template. StatefulSet: every spec field other than replicas,
//     ordinals, template, updateStrategy,
//     persistentVolumeClaimRetentionPolicy, minReadySeconds and
//     revisionHistoryLimit (so serviceName, volumeClaimTemplates and
//     podManagementPolicy among others).
//   - Service: spec.clusterIP when set on both sides to different
//     addresses, or when it turns headless (None) or stops being so;
//     spec.clusterIPs when set on both sides and different.
//   - PersistentVolumeClaim: every spec field except an increase of
//     spec.resources.requests[storage].
//   - ConfigMap, Secret: data, binaryData and stringData once immutable is
//     true, and immutable itself once true. Secret: type.
//   - StorageClass: provisioner, parameters, reclaimPolicy,
//     volumeBindingMode.
//   - RoleBinding, ClusterRoleBinding: roleRef.
func immutable(from, to *render.Object, fields []FieldChange) string {
	switch old := from.Obj.(type) {
	case *corev1.Pod:
		return podImmutable(old, to.Obj.(*corev1.Pod), fields)
	case *appsv1.Deployment, *appsv1.DaemonSet:
		return underAny(fields, "spec.selector")
	case *batchv1.Job:
		return underAny(fields, "spec.selector", "spec.template")
	case *appsv1.StatefulSet:
		mutable := []string{"replicas", "ordinals", "template", "updateStrategy",
			"persistentVolumeClaimRetentionPolicy", "minReadySeconds", "revisionHistoryLimit"}
		for _, f := range fields {
			if !hasPathPrefix(f.Path, "spec") || f.Path == "spec" {
				continue
			}
			if top := specField(f.Path); !contains(mutable, top) {
				return "spec." + top + " is immutable"
			}
		}
	case *corev1.Service:
		for _, f := range fields {
			b, _ := f.Before.(string)
			a, _ := f.After.(string)
			switch f.Path {
			case "spec.clusterIP":
				if b != "" && a != "" || b == corev1.ClusterIPNone || a == corev1.ClusterIPNone {
					return "spec.clusterIP is immutable"
				}
			case "spec.clusterIPs":
				if f.Before != nil && f.After != nil {
					return "spec.clusterIPs is immutable"
				}
			}
		}
	case *corev1.PersistentVolumeClaim:
		for _, f := range fields {
			if !hasPathPrefix(f.Path, "spec") {
				continue
			}
			if f.Path == "spec.resources.requests[storage]" {
				if !grows(f.Before, f.After) {
					return "spec.resources.requests[storage] can only grow"
				}
				continue
			}
			return "spec." + specField(f.Path) + " is immutable"
		}
	case *corev1.ConfigMap:
		return configImmutable(old.Immutable, to.Obj.(*corev1.ConfigMap).Immutable, fields)
	case *corev1.Secret:
		if r := configImmutable(old.Immutable, to.Obj.(*corev1.Secret).Immutable, fields); r != "" {
			return r
		}
		return underAny(fields, "type")
	case *storagev1.StorageClass:
		return underAny(fields, "provisioner", "parameters", "reclaimPolicy", "volumeBindingMode")
	case *rbacv1.RoleBinding, *rbacv1.ClusterRoleBinding:
		return underAny(fields, "roleRef")
	}
	return ""
}

// underAny returns "P is immutable" for the first of prefixes under which
// a field changed.
func underAny(fields []FieldChange, prefixes ...string) string {
	for _, p := range prefixes {
		for _, f := range fields {
			if hasPathPrefix(f.Path, p) {
				return p + " is immutable"
			}
		}
	}
	return ""
}

// specField returns the first field name after "spec." in a path.
func specField(path string) string {
	rest := strings.TrimPrefix(path, "spec.")
	if i := strings.IndexAny(rest, ".["); i >= 0 {
		return rest[:i]
	}
	return rest
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func podImmutable(old, cur *corev1.Pod, fields []FieldChange) string {
fields:
	for _, f := range fields {
		if !hasPathPrefix(f.Path, "spec") {
			continue
		}
		switch {
		case f.Path == "spec.activeDeadlineSeconds":
			continue
		case hasPathPrefix(f.Path, "spec.tolerations") && f.Before == nil && f.Path != "spec.tolerations":
			continue // appended
		}
		for _, list := range []string{"containers", "initContainers"} {
			item, rest, ok := listItem(f.Path, "spec."+list)
			if !ok {
				continue
			}
			oldHas, newHas := hasContainer(old.Spec, list, item), hasContainer(cur.Spec, list, item)
			switch {
			case !oldHas:
				return "spec." + list + "[" + item + "] cannot be added to a Pod"
			case !newHas:
				return "spec." + list + "[" + item + "] cannot be removed from a Pod"
			case rest == ".image":
				continue fields
			}
		}
		return f.Path + " is immutable"
	}
	return ""
}

// listItem splits "spec.containers[name=web].image" into "name=web" and
// ".image" when the path lies under an item of list.
func listItem(path, list string) (item, rest string, ok bool) {
	if !strings.HasPrefix(path, list+"[") {
		return "", "", false
	}
	s := path[len(list)+1:]
	i := strings.IndexByte(s, ']')
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// hasContainer reports whether the pod spec has the container an item
// selector ("name=web", or an index when names were not unique) names.
func hasContainer(s corev1.PodSpec, list, item string) bool {
	cs := s.Containers
	if list == "initContainers" {
		cs = s.InitContainers
	}
	if name, ok := strings.CutPrefix(item, "name="); ok {
		for _, c := range cs {
			if c.Name == name {
				return true
			}
		}
		return false
	}
	n := 0
	for _, r := range item {
		if r < '0' || r > '9' {
			return false
		}
		n = n*10 + int(r-'0')
	}
	return n < len(cs)
}

// grows reports whether a storage request increases.
func grows(before, after any) bool {
	b, okB := before.(string)
	a, okA := after.(string)
	if !okB || !okA {
		return false
	}
	qb, errB := resource.ParseQuantity(b)
	qa, errA := resource.ParseQuantity(a)
	return errB == nil && errA == nil && qa.Cmp(qb) > 0
}

func configImmutable(was, is *bool, fields []FieldChange) string {
	if was == nil || !*was {
		return ""
	}
	if is == nil || !*is {
		return "immutable cannot be unset once true"
	}
	for _, f := range fields {
		for _, p := range []string{"data", "binaryData", "stringData"} {
			if hasPathPrefix(f.Path, p) {
				return p + " is immutable (immutable: true)"
			}
		}
	}
	return ""
}
