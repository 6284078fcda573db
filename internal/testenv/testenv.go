// Package testenv runs the real components berth's component tests need —
// a containerd daemon, an image registry, the echo test images — each with
// its own temporary state, started in a test and removed with everything it
// left behind when the test ends.
//
// It is also the one place where a test may skip: when a prerequisite (root,
// a binary from a Debian package) is missing, Require and RequireRoot skip
// the test with the reason, unless the environment sets
// BERTH_E2E=required, in which case the test fails instead (CI sets it, so
// that nothing is skipped there).
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// debianPackage names the Debian package that installs a binary, for the
// message of a skipped test.
var debianPackage = map[string]string{
	"busybox":                 "busybox-static",
	"containerd":              "containerd",
	"containerd-shim-runc-v2": "containerd",
	"docker-registry":         "docker-registry",
	"runc":                    "runc",
}

// sbinPath is searched after $PATH: root's tools live there, and test
// runners do not always have it on PATH.
var sbinPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// Required reports whether missing prerequisites fail tests rather than skip
// them (BERTH_E2E=required).
func Required() bool { return os.Getenv("BERTH_E2E") == "required" }

// unavailable skips t, or fails it under BERTH_E2E=required.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (BERTH_E2E=required)", msg)
	}
	t.Skipf("%s (set BERTH_E2E=required to fail instead)", msg)
}

// RequireRoot skips t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "test needs root")
	}
}

// Require skips t unless every named binary is found on $PATH or in the
// usual sbin and bin directories.
func Require(t testing.TB, binaries ...string) {
	t.Helper()
	var missing, pkgs []string
	for _, b := range binaries {
		if _, err := lookPath(b); err != nil {
			missing = append(missing, b)
			if p, ok := debianPackage[b]; ok {
				pkgs = append(pkgs, p)
			}
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "test needs " + strings.Join(missing, ", ")
	if len(pkgs) > 0 {
		msg += " (Debian packages " + strings.Join(pkgs, ", ") + "; make test installs them as root)"
	}
	unavailable(t, "%s", msg)
}

// lookPath finds a binary on $PATH, then in sbinPath.
func lookPath(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, dir := range sbinPath {
		c := filepath.Join(dir, name)
		if fi, serr := os.Stat(c); serr == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", err
}

// daemonPath is $PATH with sbinPath appended, for daemons that look up
// helpers (containerd its shims, the shims runc).
func daemonPath() string {
	p := os.Getenv("PATH")
	for _, d := range sbinPath {
		if !strings.Contains(":"+p+":", ":"+d+":") {
			p += ":" + d
		}
	}
	return strings.TrimPrefix(p, ":")
}
