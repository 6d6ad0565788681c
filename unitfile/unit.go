// Package unitfile carries the systemd unit, so that `kube-outpost service
// install` writes the same hardened unit the packages ship.
package unitfile

import _ "embed"

// Unit is unitfile/kube-outpost.service.
//
//go:embed kube-outpost.service
var Unit string
