package agent

import "time"

// For the component tests (package agent_test), which cannot be in
// package agent: nodes/runtime imports it.

// SuiteEnv is a Runtime under the shared suite.
type SuiteEnv = suiteEnv

// NewSuiteEnv describes a Runtime to the shared suite.
func NewSuiteEnv(rt Runtime, image, missingImage, logDir string, wait time.Duration) SuiteEnv {
	return suiteEnv{rt: rt, image: image, missingImage: missingImage, logDir: logDir, wait: wait}
}

// RuntimeSuite runs the shared suite.
var RuntimeSuite = runtimeSuite
