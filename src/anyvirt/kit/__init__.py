"""The backend kit: what every platform backend would otherwise write again.

One module per concept; none imports a platform SDK, so any backend (and the
core's own migration and memory code) can use them:

- :mod:`anyvirt.kit.qemu_img`: the one qemu-img runner (argument lists, ``--``,
  allow-listed formats, untrusted images inspected before qemu-img opens them);
- :mod:`anyvirt.kit.streams`: chunked copies with progress, byte-count and sha256;
- :mod:`anyvirt.kit.stream_vmdk`: a disk as a streamOptimized VMDK stream of known
  length, its zeros never sent (vSphere's ImportVApp path);
- :mod:`anyvirt.kit.polling`: waiting for a platform task with deadline and cancel;
- :mod:`anyvirt.kit.session`: log in again once on expiry, repeat only idempotent calls;
- :mod:`anyvirt.kit.errors`: ordered error-translation tables, secrets scrubbed;
- :mod:`anyvirt.kit.placement`: least-loaded node choice.
- :mod:`anyvirt.kit.changes`: change sources for ``host.vms.watch()`` (the default poll,
  and the base a platform's event or long-poll source is written on).

Using the qemu-img runner from a backend (libvirt's ``storage.py`` today runs
its own ``run_qemu_img``; this is what replaces it)::

    from anyvirt.kit import qemu_img

    # an image handed over (DiskSpec.image): read as DiskSpec.format where the caller
    # knows it (a restore's raw guest disk, a move's export), else probed by us (never
    # by qemu-img); refused if it points elsewhere
    image = qemu_img.inspect_untrusted(disk.image, qemu_img.FORMATS, format=disk.format, job=job)
    qemu_img.convert(disk.image, volume_path, source_format=image.format,
                     format="qcow2", job=job)            # -p progress into the job
    # our own images: formats are known, pass them
    qemu_img.create(path, "qcow2", size_bytes)
    qemu_img.create(clone, "qcow2", backing=base, backing_format="qcow2")  # linked clone
    qemu_img.resize(path, "qcow2", new_size)
    facts = qemu_img.info(path, format="qcow2", force_share=True)       # -U: a running VM's disk
    facts.virtual_size, facts.backing_file, facts.backing_chain

Every call takes ``timeout=`` and ``job=`` (the job's deadline and cancel
bound it); failures are ``InvalidSpec`` (a bad image) or ``TaskFailed``, with
qemu-img's stderr.
"""
