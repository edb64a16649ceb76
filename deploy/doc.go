// Package deploy holds kmirror's deployment artifacts, and the tests that
// keep them honest:
//
//   - Dockerfile: the container image (static binary on distroless, non-root);
//   - helm/kmirror: the Helm chart, validated by helm/validate (its own module);
//   - systemd: a hardened systemd unit and its environment file.
//
// The tests build the binary with scripts/build-static.sh (the Dockerfile's
// build step), check that it is static and reports the injected version, and
// check that the Dockerfile, the script and the systemd unit agree with each
// other and with the rest of the repository.
package deploy
