package agent

import "errors"

// Errors a Runtime reports that the pod manager acts on.
var (
	// ErrImagePull: the image could not be pulled; the pod's status says
	// ErrImagePull, then ImagePullBackOff, with the registry's message.
	ErrImagePull = errors.New("ErrImagePull")
	// ErrImageNeverPull: imagePullPolicy Never and the image is missing.
	ErrImageNeverPull = errors.New("ErrImageNeverPull")
)
