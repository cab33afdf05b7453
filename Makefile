# rackside: the front door. `make help` lists the targets.

SHELL := /bin/bash
CARGO ?= cargo
CARGO_FLAGS ?= --locked
LAB := target/debug/rackside-lab

# Debian packages a fresh machine needs: build (libvirt-dev, pkg-config),
# the lab (libvirt, QEMU, namespaces, the guest kernel and busybox; picocom
# and tmux for the console as a person's terminal shows it), the network
# policy (nftables) and rack-vm.sh (ssh into its VMs, as/ld for its
# ticker guest).
DEB_PACKAGES := libvirt-daemon-system libvirt-clients libvirt-dev pkg-config \
	qemu-system-x86 qemu-utils iproute2 nftables linux-image-cloud-amd64 busybox-static \
	cpio socat picocom tmux procps util-linux coreutils iptables lintian rpm debootstrap \
	systemd-container bc jq openssl ser2net openssh-client binutils tcpdump

# QEMU before 9.0 loses writes a TCG guest makes during a live migration
# (its fast dirty-bitmap sync never re-arms TCG's dirty tracking; fixed in
# QEMU 9.0, "physmem: Fix migration dirty bitmap coherency with TCG memory
# access"). The lab's guests are TCG, so on Debian 12 the lab takes QEMU and
# libvirt from bookworm-backports (README: the lab).
LAB_BACKPORTS := qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu \
	libvirt-clients libvirt-dev

.PHONY: help setup build test-fast fuzz test-lab test lab-up lab-down lab-smoke demo bench-console bench-evacuate install stage deb rpm test-packaging test-rack test-rack-vm clean fmt lint

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

setup: ## Install the Debian packages the build and the lab need (idempotent)
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@. /etc/os-release; v=$$(dpkg-query -W -f='$${Version}' qemu-system-x86 2>/dev/null); \
	if [ "$$VERSION_CODENAME" = bookworm ] && ! dpkg --compare-versions "$$v" ge 1:9.0; then \
		echo "setup: QEMU $$v loses TCG guests' writes in live migration; installing QEMU and libvirt from bookworm-backports"; \
		printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
			> /etc/apt/sources.list.d/bookworm-backports.sources; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends -t bookworm-backports $(LAB_BACKPORTS) >/dev/null; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "setup: cargo not found (install a Rust toolchain)"; exit 1; }

build: ## Build every crate
	$(CARGO) build $(CARGO_FLAGS) --workspace

test-fast: ## Unit and property tests: no root, no daemons
	$(CARGO) test $(CARGO_FLAGS) --workspace

# FUZZ_INPUTS, FUZZ_SECONDS, FUZZ_SEED, FUZZ_INPUT: see agent/tests/fuzz_console.rs.
fuzz: ## A million generated inputs through the line reader, parser and session (a few minutes)
	$(CARGO) test $(CARGO_FLAGS) --profile fuzz -p rackside-agent --test fuzz_console -- --ignored --nocapture

test-lab: build ## Lab tests: real libvirtd, QEMU, namespaces (root)
	@[ "$$(id -u)" = 0 ] || { echo "test-lab: needs root"; exit 1; }
	$(CARGO) test $(CARGO_FLAGS) --workspace -- --ignored --test-threads=1 --skip fuzz_

test: setup test-fast fuzz test-lab test-packaging test-rack test-rack-vm ## Everything: setup, fast tests, fuzz, lab tests, packages under real systemd, the rack

lab-up: setup build ## Bring up a 3-host lab and leave it running
	$(LAB) up --hosts 3

lab-down: build ## Tear down every lab on this machine
	$(LAB) down --all

lab-smoke: setup build ## Two hosts, one guest, a live migration checked end to end
	$(CARGO) test $(CARGO_FLAGS) -p rackside-lab --test lab_smoke -- --ignored

demo: setup build ## The main job on the lab, as the engineer at the rack sees it
	$(LAB) demo --agent target/debug/rackside-agent

bench-console: setup ## Agent RSS, idle CPU and answer sizes with 200 domains (10 min)
	$(CARGO) build $(CARGO_FLAGS) --release -p rackside-agent
	$(CARGO) build $(CARGO_FLAGS) -p rackside-lab
	$(LAB) bench-console --agent target/release/rackside-agent --seconds $${BENCH_SECONDS:-600}

bench-evacuate: setup ## 4 guests off ha, shared then local disks: virsh loops vs rackside, client-seen silences (root)
	$(CARGO) build $(CARGO_FLAGS) --release -p rackside-agent
	$(CARGO) build $(CARGO_FLAGS) -p rackside-lab
	$(LAB) bench-evacuate --agent target/release/rackside-agent

PREFIX ?= /usr
DESTDIR ?=
HOOKDIR ?= /etc/libvirt/hooks/qemu.d

install: ## Install binaries, the hook and the example config under DESTDIR
	$(CARGO) build $(CARGO_FLAGS) --release -p rackside-agent -p rackside-hook -p rackside-controller
	install -D -m 0755 target/release/rackside-agent $(DESTDIR)$(PREFIX)/bin/rackside-agent
	install -D -m 0755 target/release/rackside-controller $(DESTDIR)$(PREFIX)/bin/rackside-controller
	install -D -m 0755 target/release/rackside-hook $(DESTDIR)$(PREFIX)/bin/rackside-hook
	install -d -m 0755 $(DESTDIR)$(HOOKDIR)
	ln -sf $(PREFIX)/bin/rackside-hook $(DESTDIR)$(HOOKDIR)/rackside-hook
	@if [ ! -e $(DESTDIR)/etc/rackside/agent.toml ]; then \
		install -D -m 0640 packaging/agent.toml $(DESTDIR)/etc/rackside/agent.toml; fi
	install -d -m 0750 $(DESTDIR)/var/lib/rackside
	@echo "installed; libvirt finds new hooks only when it starts or reloads: systemctl reload libvirtd"

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
PKG := $(CURDIR)/target/pkg
STAGE := $(PKG)/root

stage: ## The installed tree both packages are made from (target/pkg/root)
	rm -rf $(STAGE)
	$(MAKE) --no-print-directory install DESTDIR=$(STAGE)
	install -D -m 0644 systemd/rackside-agent.service $(STAGE)/lib/systemd/system/rackside-agent.service
	install -d -m 0755 $(STAGE)/usr/share/man/man1 $(STAGE)/usr/share/man/man8 $(STAGE)/usr/share/doc/rackside $(STAGE)/usr/share/bash-completion/completions
	for m in rackside-agent rackside-hook; do gzip -9n < packaging/man/$$m.8 > $(STAGE)/usr/share/man/man8/$$m.8.gz; done
	gzip -9n < packaging/man/rackside-controller.1 > $(STAGE)/usr/share/man/man1/rackside-controller.1.gz
	for b in rackside-agent rackside-controller; do target/release/$$b completions bash > $(STAGE)/usr/share/bash-completion/completions/$$b; \
		chmod 0644 $(STAGE)/usr/share/bash-completion/completions/$$b; done
	install -m 0644 packaging/copyright $(STAGE)/usr/share/doc/rackside/copyright
	strip --strip-unneeded $(STAGE)/usr/bin/rackside-agent $(STAGE)/usr/bin/rackside-hook $(STAGE)/usr/bin/rackside-controller

deb: stage ## Build target/pkg/rackside_VERSION-1_amd64.deb (dpkg-deb)
	rm -rf $(PKG)/deb && cp -a $(STAGE) $(PKG)/deb
	gzip -9n < packaging/changelog > $(PKG)/deb/usr/share/doc/rackside/changelog.Debian.gz
	install -d -m 0755 $(PKG)/deb/DEBIAN
	install -m 0644 packaging/deb/conffiles $(PKG)/deb/DEBIAN/conffiles
	install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm $(PKG)/deb/DEBIAN/
	sed -e 's/@VERSION@/$(VERSION)/' -e "s/@SIZE@/$$(du -sk --exclude=DEBIAN $(PKG)/deb | cut -f1)/" \
		packaging/deb/control.in > $(PKG)/deb/DEBIAN/control
	dpkg-deb --root-owner-group -Zxz --build $(PKG)/deb $(PKG)/rackside_$(VERSION)-1_amd64.deb

rpm: stage ## Build target/pkg/rackside-VERSION-1.x86_64.rpm (rpmbuild)
	rm -rf $(PKG)/rpmbuild
	rpmbuild -bb --quiet --define "_topdir $(PKG)/rpmbuild" --define "version $(VERSION)" \
		--define "stage $(STAGE)" packaging/rpm/rackside.spec
	cp $(PKG)/rpmbuild/RPMS/x86_64/rackside-$(VERSION)-1.x86_64.rpm $(PKG)/

test-packaging: deb rpm ## deb installed/removed/purged here, lintian, rpm vs deb, the deb under real systemd (root)
	bash tests/packaging/deb.sh $(PKG)/rackside_$(VERSION)-1_amd64.deb
	bash tests/packaging/rpm.sh $(PKG)/rackside-$(VERSION)-1.x86_64.rpm $(PKG)/rackside_$(VERSION)-1_amd64.deb
	bash tests/packaging/systemd.sh $(PKG)/rackside_$(VERSION)-1_amd64.deb

test-rack: deb ## Three system-container hosts from the deb, one evacuated and powered off by the controller (root; tests/packaging/RACK.md)
	$(CARGO) build $(CARGO_FLAGS) -p rackside-lab
	bash tests/packaging/rack.sh $(PKG)/rackside_$(VERSION)-1_amd64.deb $(LAB)

# Gated: runs only where KVM boots guests faster than TCG (it says why it
# skipped otherwise, exit 0, in about 25 s). RACK_VM=force runs it anyway.
# After test-rack, whose host base it boots.
test-rack-vm: deb ## KVM-gated: the rack with three QEMU virtual machines as hosts, real UARTs as lines (root)
	bash tests/packaging/rack-vm.sh $(PKG)/rackside_$(VERSION)-1_amd64.deb

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## clippy with warnings as errors
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

clean: lab-down ## Tear down labs and remove build output
	$(CARGO) clean
