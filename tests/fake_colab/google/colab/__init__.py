"""A stand-in for Colab's ``google.colab`` package, so tests can run the notebooks' Colab path anywhere.

Put ``tests/fake_colab`` on a kernel's path. ``drive.mount(mount_point)``
links ``mount_point/MyDrive`` to the folder named by ``FAKE_COLAB_DRIVE``, the
Drive that outlives a VM; ``userdata.get(name)`` reads the JSON object in the
file named by ``FAKE_COLAB_SECRETS``.
"""
