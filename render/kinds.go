package render

import (
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/render/api/v1alpha1"
)

// kind describes one kind berth understands.
type kind struct {
	apiVersion string
	name       string
	namespaced bool
	new        func() any
}

var kinds = []kind{
	{"v1", "Pod", true, func() any { return new(corev1.Pod) }},
	{"v1", "Service", true, func() any { return new(corev1.Service) }},
	{"v1", "ConfigMap", true, func() any { return new(corev1.ConfigMap) }},
	{"v1", "Secret", true, func() any { return new(corev1.Secret) }},
	{"v1", "Namespace", false, func() any { return new(corev1.Namespace) }},
	{"v1", "ServiceAccount", true, func() any { return new(corev1.ServiceAccount) }},
	{"v1", "PersistentVolumeClaim", true, func() any { return new(corev1.PersistentVolumeClaim) }},
	{"apps/v1", "Deployment", true, func() any { return new(appsv1.Deployment) }},
	{"apps/v1", "StatefulSet", true, func() any { return new(appsv1.StatefulSet) }},
	{"apps/v1", "DaemonSet", true, func() any { return new(appsv1.DaemonSet) }},
	{"batch/v1", "Job", true, func() any { return new(batchv1.Job) }},
	{"batch/v1", "CronJob", true, func() any { return new(batchv1.CronJob) }},
	{"autoscaling/v2", "HorizontalPodAutoscaler", true, func() any { return new(autoscalingv2.HorizontalPodAutoscaler) }},
	{"networking.k8s.io/v1", "Ingress", true, func() any { return new(networkingv1.Ingress) }},
	{"networking.k8s.io/v1", "NetworkPolicy", true, func() any { return new(networkingv1.NetworkPolicy) }},
	{"rbac.authorization.k8s.io/v1", "Role", true, func() any { return new(rbacv1.Role) }},
	{"rbac.authorization.k8s.io/v1", "RoleBinding", true, func() any { return new(rbacv1.RoleBinding) }},
	{"rbac.authorization.k8s.io/v1", "ClusterRole", false, func() any { return new(rbacv1.ClusterRole) }},
	{"rbac.authorization.k8s.io/v1", "ClusterRoleBinding", false, func() any { return new(rbacv1.ClusterRoleBinding) }},
	{"storage.k8s.io/v1", "StorageClass", false, func() any { return new(storagev1.StorageClass) }},
	{v1alpha1.APIVersion, "Machine", false, func() any { return new(v1alpha1.Machine) }},
	{v1alpha1.APIVersion, "Cluster", false, func() any { return new(v1alpha1.Cluster) }},
}

var kindIndex = func() map[[2]string]*kind {
	m := make(map[[2]string]*kind, len(kinds))
	for i := range kinds {
		m[[2]string{kinds[i].apiVersion, kinds[i].name}] = &kinds[i]
	}
	return m
}()

func lookupKind(apiVersion, name string) *kind {
	return kindIndex[[2]string{apiVersion, name}]
}

// servedAs lists the apiVersions under which berth knows a kind, for the
// message about a kind asked for under the wrong one.
func servedAs(name string) []string {
	var vs []string
	for _, k := range kinds {
		if strings.EqualFold(k.name, name) {
			vs = append(vs, k.apiVersion+" "+k.name)
		}
	}
	sort.Strings(vs)
	return vs
}

// SupportedKinds lists "apiVersion Kind" for every kind berth decodes.
func SupportedKinds() []string {
	out := make([]string, 0, len(kinds))
	for _, k := range kinds {
		out = append(out, k.apiVersion+" "+k.name)
	}
	return out
}

// Namespaced reports whether objects of the kind live in a namespace.
func Namespaced(apiVersion, kindName string) bool {
	k := lookupKind(apiVersion, kindName)
	return k != nil && k.namespaced
}

// PodTemplate returns the pod metadata and spec an object runs, with the
// field path of the spec ("spec" for a Pod, "spec.template.spec" for a
// Deployment, "spec.jobTemplate.spec.template.spec" for a CronJob). ok is
// false for kinds that run no pods.
func PodTemplate(o *Object) (meta *metav1.ObjectMeta, spec *corev1.PodSpec, path string, ok bool) {
	switch v := o.Obj.(type) {
	case *corev1.Pod:
		return &v.ObjectMeta, &v.Spec, "spec", true
	case *appsv1.Deployment:
		return &v.Spec.Template.ObjectMeta, &v.Spec.Template.Spec, "spec.template.spec", true
	case *appsv1.StatefulSet:
		return &v.Spec.Template.ObjectMeta, &v.Spec.Template.Spec, "spec.template.spec", true
	case *appsv1.DaemonSet:
		return &v.Spec.Template.ObjectMeta, &v.Spec.Template.Spec, "spec.template.spec", true
	case *batchv1.Job:
		return &v.Spec.Template.ObjectMeta, &v.Spec.Template.Spec, "spec.template.spec", true
	case *batchv1.CronJob:
		t := &v.Spec.JobTemplate.Spec.Template
		return &t.ObjectMeta, &t.Spec, "spec.jobTemplate.spec.template.spec", true
	}
	return nil, nil, "", false
}

// Meta returns the object's metadata.
func Meta(o *Object) *metav1.ObjectMeta {
	if m, ok := o.Obj.(metav1.ObjectMetaAccessor); ok {
		return m.GetObjectMeta().(*metav1.ObjectMeta)
	}
	return nil
}
