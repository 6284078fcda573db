package resolve

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkPod resolves a pod with 20 env references (ConfigMap and
// Secret keys, fieldRefs, resourceFieldRefs, expansions) and 3 volumes
// (a configMap, a secret and a projected one).
func BenchmarkPod(b *testing.B) {
	var env []corev1.EnvVar
	for i := range 5 {
		env = append(env,
			corev1.EnvVar{Name: fmt.Sprintf("CM_%d", i), ValueFrom: cmKey("app-config", "DATABASE_HOST", nil)},
			corev1.EnvVar{Name: fmt.Sprintf("SECRET_%d", i), ValueFrom: secretKey("db-creds", "password", nil)},
			corev1.EnvVar{Name: fmt.Sprintf("FIELD_%d", i), ValueFrom: field("metadata.labels['app']")},
			corev1.EnvVar{Name: fmt.Sprintf("URL_%d", i), Value: fmt.Sprintf("postgres://$(CM_%d):5432", i)},
		)
	}
	env[3].ValueFrom, env[3].Value = res("limits.memory", "1Mi", ""), ""
	spec := oneContainer(corev1.Container{Env: env, EnvFrom: []corev1.EnvFromSource{fromCM("overrides", "", nil)}},
		cmVolume("config", "app-config", nil, nil, nil),
		secretVolume("creds", "db-creds", nil, nil, nil),
		corev1.Volume{Name: "all", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "overrides"}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "tls"}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}},
		}}}},
	)
	in := testInput(spec)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Pod(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTemplateHash hashes the same pod's template.
func BenchmarkTemplateHash(b *testing.B) {
	t := webTemplate()
	b.ReportAllocs()
	for b.Loop() {
		TemplateHash(t)
	}
}
