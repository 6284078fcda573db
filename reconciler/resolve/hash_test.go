package resolve

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func webTemplate() *corev1.PodTemplateSpec {
	return &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "tier": "front"}},
		Spec: *oneContainer(corev1.Container{
			Env:       []corev1.EnvVar{{Name: "PW", ValueFrom: secretKey("db-creds", "password", nil)}},
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}},
		}, cmVolume("config", "app-config", nil, nil, nil)),
	}
}

func TestTemplateHash(t *testing.T) {
	base := TemplateHash(webTemplate())
	if len(base) < 6 || len(base) > 10 || strings.Trim(base, "bcdfghjklmnpqrstvwxz2456789") != "" {
		t.Errorf("hash %q: want 6-10 characters of rand.SafeEncodeString's alphabet", base)
	}
	if again := TemplateHash(webTemplate()); again != base {
		t.Errorf("not stable: %s, then %s", base, again)
	}

	same := []struct {
		name   string
		change func(*corev1.PodTemplateSpec)
	}{
		{"a quantity written another way", func(p *corev1.PodTemplateSpec) {
			p.Spec.Containers[0].Resources.Limits[corev1.ResourceCPU] = resource.MustParse("0.5")
		}},
		{"labels built in another order", func(p *corev1.PodTemplateSpec) {
			p.Labels = map[string]string{"tier": "front", "app": "web"}
		}},
		{"an empty list instead of none", func(p *corev1.PodTemplateSpec) {
			p.Spec.Containers[0].Args = []string{}
		}},
	}
	for _, tc := range same {
		p := webTemplate()
		tc.change(p)
		if got := TemplateHash(p); got != base {
			t.Errorf("%s changed the hash", tc.name)
		}
	}

	different := []struct {
		name   string
		change func(*corev1.PodTemplateSpec)
	}{
		{"image", func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Image = "example/web:2" }},
		{"a referenced key", func(p *corev1.PodTemplateSpec) { p.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef.Key = "other" }},
		{"a label", func(p *corev1.PodTemplateSpec) { p.Labels["tier"] = "back" }},
		{"an annotation", func(p *corev1.PodTemplateSpec) { p.Annotations = map[string]string{"restartedAt": "now"} }},
		{"a volume's ConfigMap", func(p *corev1.PodTemplateSpec) { p.Spec.Volumes[0].ConfigMap.Name = "other" }},
	}
	seen := map[string]string{base: "base"}
	for _, tc := range different {
		p := webTemplate()
		tc.change(p)
		got := TemplateHash(p)
		if prev, ok := seen[got]; ok {
			t.Errorf("changing %s gives the hash of %s", tc.name, prev)
		}
		seen[got] = tc.name
	}
}

// TestHashIgnoresContent: the pod's hash is over the pod as written, so a
// changed ConfigMap or Secret changes the resolved pod but not its hash.
func TestHashIgnoresContent(t *testing.T) {
	tmpl := webTemplate()
	tmpl.Spec.Containers[0].Env = append(tmpl.Spec.Containers[0].Env, corev1.EnvVar{Name: "LEVEL", ValueFrom: cmKey("app-config", "LOG_LEVEL", nil)})
	in := testInput(&tmpl.Spec)
	in.Labels, in.Annotations = tmpl.Labels, tmpl.Annotations
	before := mustResolve(t, in)

	in.Sources.AddConfigMap(&corev1.ConfigMap{ObjectMeta: meta("app-config"), Data: map[string]string{"LOG_LEVEL": "trace"}})
	in.Sources.AddSecret(&corev1.Secret{ObjectMeta: meta("db-creds"), Data: map[string][]byte{"password": []byte("rotated")}})
	after := mustResolve(t, in)

	if before.Pod.Hash != after.Pod.Hash {
		t.Errorf("hash changed with content: %s -> %s", before.Pod.Hash, after.Pod.Hash)
	}
	if equalJSON(t, before.Pod, after.Pod) {
		t.Error("the resolved pod did not change with its ConfigMap and Secret")
	}
	if want := TemplateHash(tmpl); before.Pod.Hash != want {
		t.Errorf("pod hash %s, want TemplateHash of its labels, annotations and spec %s", before.Pod.Hash, want)
	}

	// A controller's own hash wins, so labels it adds change nothing.
	in.Hash = "abc123"
	in.Labels = map[string]string{"app": "web", "pod-template-hash": "abc123"}
	if got := mustResolve(t, in).Pod.Hash; got != "abc123" {
		t.Errorf("hash %s, want the Input's abc123", got)
	}
}
