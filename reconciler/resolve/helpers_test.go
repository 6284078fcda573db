package resolve

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Secret values used across the tests: distinctive, so that a test can
// look for them in every error, warning and printed value.
const (
	secretPassword = "S3cr3t-P@ss$(HOME)$$x"
	secretToken    = "tok-0f1e2d3c4b5a"
	secretTLSKey   = "-----BEGIN KEY-----zz9"
)

var secretValues = []string{secretPassword, secretToken, secretTLSKey, "YWRtaW4=", "UzNjcjN0UEBzcw=="}

func ptr[T any](v T) *T { return &v }

func meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: "default", Name: name}
}

func testSources() *Sources {
	s := &Sources{}
	s.AddConfigMap(&corev1.ConfigMap{
		ObjectMeta: meta("app-config"),
		Data: map[string]string{
			"DATABASE_HOST": "postgres.production.svc",
			"DATABASE_PORT": "5432",
			"LOG_LEVEL":     "info",
			"nginx.conf":    "server { listen 80; }\n",
			"1-starts-num":  "ok",
			"price":         "$5 $(LOG_LEVEL)",
		},
		BinaryData: map[string][]byte{"logo.png": {0x89, 'P', 'N', 'G', 0}},
	})
	s.AddConfigMap(&corev1.ConfigMap{ObjectMeta: meta("overrides"), Data: map[string]string{"LOG_LEVEL": "debug", "EXTRA": "1"}})
	s.AddSecret(&corev1.Secret{
		ObjectMeta: meta("db-creds"),
		Data:       map[string][]byte{"username": []byte("admin"), "password": []byte("old")},
		StringData: map[string]string{"password": secretPassword},
	})
	s.AddSecret(&corev1.Secret{ObjectMeta: meta("api-token"), Data: map[string][]byte{"token": []byte(secretToken)}})
	s.AddSecret(&corev1.Secret{ObjectMeta: meta("tls"), Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.key": []byte(secretTLSKey), "tls.crt": []byte("CERT")}})
	s.AddSecret(&corev1.Secret{
		ObjectMeta: meta("regcred"), Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"registry.example":{"auth":"` + secretToken + `"}}}`)},
	})
	s.AddSecret(&corev1.Secret{
		ObjectMeta: meta("legacycred"), Type: corev1.SecretTypeDockercfg,
		Data: map[string][]byte{corev1.DockerConfigKey: []byte(`{"old.example":{"auth":"` + secretToken + `"}}`)},
	})
	// Another namespace: never visible from "default".
	other := &corev1.ConfigMap{ObjectMeta: meta("elsewhere"), Data: map[string]string{"k": "v"}}
	other.Namespace = "other"
	s.AddConfigMap(other)
	return s
}

// testInput is a pod in namespace default on machine node1.
func testInput(spec *corev1.PodSpec) *Input {
	return &Input{
		Namespace:   "default",
		Name:        "web-0",
		UID:         "uid-1234",
		Labels:      map[string]string{"app": "web", "tier": "front"},
		Annotations: map[string]string{"owner": "team-a", "Example.COM/Note": "x\"y"},
		Spec:        spec,
		Machine: Machine{
			Name:      "node1",
			Addresses: []string{"198.18.0.11", "fd00::11"},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU:              resource.MustParse("4"),
				corev1.ResourceMemory:           resource.MustParse("8Gi"),
				corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
			},
		},
		Sources: testSources(),
	}
}

func oneContainer(c corev1.Container, vols ...corev1.Volume) *corev1.PodSpec {
	if c.Name == "" {
		c.Name = "web"
	}
	if c.Image == "" {
		c.Image = "example/web:1"
	}
	return &corev1.PodSpec{Containers: []corev1.Container{c}, Volumes: vols, RestartPolicy: corev1.RestartPolicyAlways}
}

// mustResolve resolves in and fails the test on error. It never prints
// the pod, which may hold Secret data.
func mustResolve(t testing.TB, in *Input) Result {
	t.Helper()
	res, err := Pod(in)
	if err != nil {
		t.Fatalf("Pod: %v", err)
	}
	return res
}

// errorLines are the single errors of a joined error.
func errorLines(err error) []string {
	if err == nil {
		return nil
	}
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

// checkNoSecret fails when any Secret value of the tests appears in s.
// It says where, never the value.
func checkNoSecret(t testing.TB, what, s string) {
	t.Helper()
	for i, v := range secretValues {
		if strings.Contains(s, v) {
			t.Errorf("%s holds secret value #%d", what, i)
		}
	}
}

// agentEnv applies the agent's $(VAR) expansion (nodes/runtime's
// containerEnv: each value expanded against the variables before it,
// "$$" to "$", undefined references left as written) to wire values, so
// tests check what a container finally sees. fill gives values of
// variables the agent fills in itself.
func agentEnv(env []corev1.EnvVar, fill map[string]string) map[string]string {
	own := map[string]string{}
	for _, e := range env {
		v := e.Value
		if e.ValueFrom != nil {
			v = escape(fill[e.Name])
		}
		own[e.Name] = agentExpand(v, own)
	}
	return own
}

func agentExpand(s string, env map[string]string) string {
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
