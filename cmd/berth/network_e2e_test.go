package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"berth.dev/berth/nodes/lab"
)

// TestNetworkE2E: the pod network, Services, cluster DNS, NetworkPolicy and
// Ingress on a lab of three machines, reached the way users reach them: from
// pods (berth exec) and from the host; and a rolling update behind a
// NodePort under constant load without a failed request.
func TestNetworkE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("testing.Short: brings up a lab and builds berth")
	}
	f := startLabFleet(t, "e2e-network")
	l, env, run := f.lab, f.env, f.run

	certPEM, keyPEM, pool := testCert(t, "echo.example.test")
	pushChange(t, l.Repo, "network", func(dir string) {
		editFile(t, filepath.Join(dir, "cluster.yaml"), "  serviceCIDR: 198.19.0.0/16\n", networkCluster)
		files := map[string]string{
			"net.yaml":     networkFleet,
			"ingress.yaml": fmt.Sprintf(ingressFleet, base64.StdEncoding.EncodeToString(certPEM), base64.StdEncoding.EncodeToString(keyPEM)),
		}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
	if code, _, _ := run("reconcile", "--once", "--timeout", "5m"); code != exitOK {
		t.Fatal("reconcile of the network fleet did not converge")
	}

	// Every pod has an address in its machine's pod CIDR.
	type pod struct {
		Machine, Namespace, Name, PodIP string
		Labels                          map[string]string
	}
	var pods []pod
	_, out, _ := run("get", "pods", "-A", "-o", "json")
	if err := json.Unmarshal([]byte(out), &pods); err != nil {
		t.Fatalf("get pods: %v", err)
	}
	cidrs := map[string]netip.Prefix{}
	for _, m := range l.Machines {
		cidrs[m.Name] = m.PodCIDR
	}
	byName := map[string]pod{}
	echoOn := map[string]string{} // machine -> an echo pod there
	for _, p := range pods {
		byName[p.Namespace+"/"+p.Name] = p
		a, err := netip.ParseAddr(p.PodIP)
		if err != nil || !cidrs[p.Machine].Contains(a) {
			t.Errorf("pod %s/%s on %s has address %q, not in %s", p.Namespace, p.Name, p.Machine, p.PodIP, cidrs[p.Machine])
		}
		if p.Namespace == "default" && p.Labels["app"] == "echo" {
			echoOn[p.Machine] = p.Name
		}
	}
	if len(echoOn) != 3 {
		t.Fatalf("echo pods on %v; want one on each machine", echoOn)
	}
	client := echoOn["lab1"]
	// inPod runs a command in a pod, for at most 10 s. (Not wget -T:
	// Debian's static busybox 1.35 crashes with it.)
	inPod := func(pod string, cmd ...string) (int, string) {
		t.Helper()
		code, out, errOut := berth(t, env, append([]string{"exec", "--timeout", "10s", pod, "--"}, cmd...)...)
		return code, out + errOut
	}
	answer := regexp.MustCompile(`pod=(\S+)`)

	// A pod on another machine by its address, and the Service by name
	// from lab1: DNS, the ClusterIP and the routes between machines.
	other := byName["default/"+echoOn["lab2"]]
	if code, out := inPod(client, "wget", "-qO-", "http://"+other.PodIP+":8080/"); code != 0 || !strings.Contains(out, "pod="+other.Name) {
		t.Errorf("lab1 -> pod on lab2 at %s: exit %d %q", other.PodIP, code, out)
	}
	// The request is in that pod's log, read through its machine's agent.
	if code, out, errOut := berth(t, env, "logs", "--tail", "20", other.Name); code != exitOK || !strings.Contains(out, "method=GET path=/ ") {
		t.Errorf("berth logs %s: exit %d\n%s%s", other.Name, code, out, errOut)
	}
	seen := map[string]bool{}
	for range 12 {
		code, out := inPod(client, "wget", "-qO-", "http://echo.default.svc.cluster.local/")
		if m := answer.FindStringSubmatch(out); code == 0 && m != nil {
			seen[m[1]] = true
		} else {
			t.Errorf("lab1 -> echo Service: exit %d %q", code, out)
		}
	}
	if len(seen) < 2 {
		t.Errorf("the echo Service answered from %v only; want pods on several machines", seen)
	}

	// The headless Service and the StatefulSet's stable names.
	for _, name := range []string{"web-0", "web-1"} {
		code, out := inPod(client, "wget", "-qO-", "http://"+name+".web.default.svc.cluster.local:8080/")
		if code != 0 || !strings.Contains(out, "pod="+name) {
			t.Errorf("%s.web: exit %d %q", name, code, out)
		}
	}
	if code, out := inPod(client, "busybox", "nslookup", "web.default.svc.cluster.local"); code != 0 ||
		!strings.Contains(out, byName["default/web-0"].PodIP) || !strings.Contains(out, byName["default/web-1"].PodIP) {
		t.Errorf("nslookup of the headless Service: exit %d %q; want both web pods' addresses", code, out)
	}

	// NodePort and LoadBalancer from the host.
	get := func(url string) (string, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return string(b), fmt.Errorf("%s: %s", url, resp.Status)
		}
		return string(b), nil
	}
	for _, m := range l.Machines {
		if out, err := get(fmt.Sprintf("http://%s:30080/", m.Address.Addr())); err != nil || !answer.MatchString(out) {
			t.Errorf("NodePort on %s: %q %v", m.Name, out, err)
		}
	}
	_, out, _ = run("get", "svc", "-o", "json")
	var svcs []struct {
		Name            string       `json:"name"`
		LoadBalancerIPs []netip.Addr `json:"loadBalancerIPs"`
	}
	if err := json.Unmarshal([]byte(out), &svcs); err != nil {
		t.Fatalf("get svc: %v", err)
	}
	var lbIP netip.Addr
	for _, s := range svcs {
		if s.Name == "echo-lb" && len(s.LoadBalancerIPs) == 1 {
			lbIP = s.LoadBalancerIPs[0]
		}
	}
	if !netip.MustParsePrefix("198.18.0.240/28").Contains(lbIP) {
		t.Fatalf("echo-lb has LoadBalancer address %v, want one from the pool", lbIP)
	}
	if out, err := get("http://" + lbIP.String() + "/"); err != nil || !answer.MatchString(out) {
		t.Errorf("LoadBalancer %s from the host: %q %v", lbIP, out, err)
	}

	// The machine holding the address fails (its link is cut): another
	// takes the address over and answers for it; back, it gives it up.
	held := func() []string {
		var on []string
		for _, m := range l.Machines {
			out, err := osexec.Command("ip", "-n", m.Netns, "-o", "addr", "show").CombinedOutput()
			if err != nil {
				t.Fatalf("ip -n %s addr: %v\n%s", m.Netns, err, out)
			}
			if strings.Contains(string(out), " "+lbIP.String()+"/") {
				on = append(on, m.Name)
			}
		}
		return on
	}
	holders := held()
	if len(holders) != 1 {
		t.Fatalf("%s is held by %v; want one machine", lbIP, holders)
	}
	var downed *lab.Machine
	for i := range l.Machines {
		if l.Machines[i].Name == holders[0] {
			downed = &l.Machines[i]
		}
	}
	linkUp := func() {
		if out, err := osexec.Command("ip", "link", "set", downed.HostLink, "up").CombinedOutput(); err != nil {
			t.Errorf("link up: %v %s", err, out)
		}
	}
	if out, err := osexec.Command("ip", "link", "set", downed.HostLink, "down").CombinedOutput(); err != nil {
		t.Fatalf("cut %s: %v %s", downed.Name, err, out)
	}
	t.Cleanup(linkUp)                              // idempotent
	run("reconcile", "--once", "--timeout", "15s") // not converged: a machine is down
	waitFor(t, 30*time.Second, "the LoadBalancer address answered by another machine", func() bool {
		out, err := get("http://" + lbIP.String() + "/")
		return err == nil && answer.MatchString(out)
	})
	linkUp()
	if code, _, _ := run("reconcile", "--once", "--timeout", "3m"); code != exitOK {
		t.Errorf("reconcile after %s came back: exit %d", downed.Name, code)
	}
	if now := held(); len(now) != 1 || now[0] == downed.Name {
		t.Errorf("after %s downed and came back, %s is held by %v; want one other machine", downed.Name, lbIP, now)
	}

	// NetworkPolicy: the locked pod takes only pods labelled
	// access=granted.
	var locked, granted string
	for _, p := range pods {
		switch {
		case p.Namespace == "secure" && p.Labels["app"] == "locked":
			locked = p.PodIP
		case p.Labels["access"] == "granted":
			granted = p.Name
		}
	}
	if code, out := inPod(granted, "wget", "-qO-", "http://"+locked+":8080/"); code != 0 || !answer.MatchString(out) {
		t.Errorf("granted -> locked: exit %d %q; want allowed", code, out)
	}
	if code, out := inPod(client, "wget", "-qO-", "http://"+locked+":8080/"); code == 0 {
		t.Errorf("echo -> locked answered %q; want denied by the NetworkPolicy", out)
	}

	// A rolling update behind the NodePort under constant load: not one
	// request fails. New connections each time, so every request is routed
	// afresh through the endpoints as they change.
	var ok, failed atomic.Int64
	var failures sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			url := fmt.Sprintf("http://%s:30080/", l.Machines[i%3].Address.Addr())
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := get(url); err != nil {
					failed.Add(1)
					failures.Store(err.Error(), true)
				} else {
					ok.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	pushChange(t, l.Repo, "echo 2 under load", func(dir string) {
		editFile(t, filepath.Join(dir, "app.yaml"), "berth/echo:1", "berth/echo:2")
	})
	code, _, _ := run("reconcile", "--once", "--timeout", "5m")
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if code != exitOK {
		t.Errorf("rollout under load: exit %d", code)
	}
	var why []string
	failures.Range(func(k, _ any) bool { why = append(why, k.(string)); return true })
	t.Logf("rollout under load: %d requests answered, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 || ok.Load() < 50 {
		t.Errorf("rollout under load: %d ok, %d failed: %s", ok.Load(), failed.Load(), strings.Join(why, "; "))
	}

	// Ingress by host, over TLS with the Secret's certificate (SNI), on
	// the ingress machine lab1.
	ingressAddr := l.Machines[0].Address.Addr().String()
	tc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "echo.example.test"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, ingressAddr+":443")
		},
	}}
	waitFor(t, 30*time.Second, "the Ingress answering over TLS", func() bool {
		resp, err := tc.Get("https://echo.example.test/")
		if err != nil {
			t.Logf("ingress: %v", err)
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && answer.Match(b)
	})
}

// testCert makes a CA and a certificate for host signed by it.
func testCert(t *testing.T, host string) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth e2e CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), pool
}

// networkCluster replaces the quickstart Cluster's serviceCIDR line: a
// LoadBalancer pool on the lab's machine network and lab1 as the ingress
// machine.
const networkCluster = `  serviceCIDR: 198.19.0.0/16
  loadBalancer:
    pools: ["198.18.0.240/28"]
  ingress:
    machineSelector:
      matchLabels:
        kubernetes.io/hostname: lab1
`

// echoPodSpec is the quickstart's pod, for the other workloads.
const echoPodSpec = `      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: echo
          image: 198.18.0.1:5000/berth/echo:1
          ports:
            - name: http
              containerPort: 8080
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
          resources:
            requests:
              cpu: 10m
              memory: 16Mi
            limits:
              cpu: 200m
              memory: 64Mi
          securityContext:
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities:
              drop: ["ALL"]
`

const networkFleet = `apiVersion: v1
kind: Service
metadata:
  name: echo-np
spec:
  type: NodePort
  selector:
    app: echo
  ports:
    - name: http
      port: 80
      targetPort: http
      nodePort: 30080
---
apiVersion: v1
kind: Service
metadata:
  name: echo-lb
spec:
  type: LoadBalancer
  selector:
    app: echo
  ports:
    - name: http
      port: 80
      targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector:
    app: web
  ports:
    - name: http
      port: 8080
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
` + echoPodSpec + `---
apiVersion: v1
kind: Namespace
metadata:
  name: secure
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: locked
  namespace: secure
spec:
  replicas: 1
  selector:
    matchLabels:
      app: locked
  template:
    metadata:
      labels:
        app: locked
    spec:
` + echoPodSpec + `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: locked
  namespace: secure
spec:
  podSelector:
    matchLabels:
      app: locked
  policyTypes: ["Ingress"]
  ingress:
    - from:
        - namespaceSelector: {}
          podSelector:
            matchLabels:
              access: granted
      ports:
        - port: http
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: granted
spec:
  replicas: 1
  selector:
    matchLabels:
      app: granted
  template:
    metadata:
      labels:
        app: granted
        access: granted
    spec:
` + echoPodSpec

// ingressFleet is a TLS Secret (certificate and key, base64) and an
// Ingress of the berth class by host.
const ingressFleet = `apiVersion: v1
kind: Secret
metadata:
  name: echo-tls
type: kubernetes.io/tls
data:
  tls.crt: %s
  tls.key: %s
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: echo
spec:
  ingressClassName: berth
  tls:
    - hosts: ["echo.example.test"]
      secretName: echo-tls
  rules:
    - host: echo.example.test
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: echo
                port:
                  name: http
`
