package gl

/*
#cgo LDFLAGS: -lEGL
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef EGL_PLATFORM_SURFACELESS_MESA
#define EGL_PLATFORM_SURFACELESS_MESA 0x31DD
#endif

typedef struct {
	EGLDisplay dpy;
	EGLContext ctx;
	EGLConfig cfg;
	int shared; // a context sharing another's objects: close keeps the display
} swEGL;

static const char *swEGLErr(EGLint e) {
	switch (e) {
	case EGL_SUCCESS: return "EGL_SUCCESS";
	case EGL_NOT_INITIALIZED: return "EGL_NOT_INITIALIZED";
	case EGL_BAD_ACCESS: return "EGL_BAD_ACCESS";
	case EGL_BAD_ALLOC: return "EGL_BAD_ALLOC";
	case EGL_BAD_ATTRIBUTE: return "EGL_BAD_ATTRIBUTE";
	case EGL_BAD_CONFIG: return "EGL_BAD_CONFIG";
	case EGL_BAD_CONTEXT: return "EGL_BAD_CONTEXT";
	case EGL_BAD_DISPLAY: return "EGL_BAD_DISPLAY";
	case EGL_BAD_MATCH: return "EGL_BAD_MATCH";
	case EGL_BAD_PARAMETER: return "EGL_BAD_PARAMETER";
	}
	return "EGL error";
}

// swContextOn initialises dpy and makes a 4.3 core context current on it
// with no surface. It returns 0 or writes why it failed into msg.
static int swContextOn(EGLDisplay dpy, swEGL *out, char *msg, int n) {
	EGLint major = 0, minor = 0;
	if (dpy == EGL_NO_DISPLAY) {
		snprintf(msg, n, "no display (%s)", swEGLErr(eglGetError()));
		return 1;
	}
	if (!eglInitialize(dpy, &major, &minor)) {
		snprintf(msg, n, "eglInitialize: %s", swEGLErr(eglGetError()));
		return 1;
	}
	if (!eglBindAPI(EGL_OPENGL_API)) {
		snprintf(msg, n, "eglBindAPI(OpenGL): %s", swEGLErr(eglGetError()));
		eglTerminate(dpy);
		return 1;
	}
	EGLint cfgAttr[] = {EGL_SURFACE_TYPE, EGL_PBUFFER_BIT, EGL_RENDERABLE_TYPE, EGL_OPENGL_BIT, EGL_NONE};
	EGLConfig cfg = (EGLConfig)0;
	EGLint ncfg = 0;
	if (!eglChooseConfig(dpy, cfgAttr, &cfg, 1, &ncfg) || ncfg < 1) {
		cfg = (EGLConfig)0; // EGL_NO_CONFIG_KHR
	}
	EGLint ctxAttr[] = {
		EGL_CONTEXT_MAJOR_VERSION, 4,
		EGL_CONTEXT_MINOR_VERSION, 3,
		EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
		EGL_NONE};
	EGLContext ctx = eglCreateContext(dpy, cfg, EGL_NO_CONTEXT, ctxAttr);
	if (ctx == EGL_NO_CONTEXT) {
		snprintf(msg, n, "eglCreateContext(OpenGL 4.3 core): %s", swEGLErr(eglGetError()));
		eglTerminate(dpy);
		return 1;
	}
	if (!eglMakeCurrent(dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, ctx)) {
		snprintf(msg, n, "eglMakeCurrent without surface: %s", swEGLErr(eglGetError()));
		eglDestroyContext(dpy, ctx);
		eglTerminate(dpy);
		return 1;
	}
	out->dpy = dpy;
	out->ctx = ctx;
	out->cfg = cfg;
	out->shared = 0;
	return 0;
}

// swEGLShared makes a context that shares main's objects (programs,
// buffers) current on the calling thread, on main's display.
static int swEGLShared(swEGL *main, swEGL *out, char *msg, int n) {
	if (!eglBindAPI(EGL_OPENGL_API)) {
		snprintf(msg, n, "eglBindAPI(OpenGL): %s", swEGLErr(eglGetError()));
		return 1;
	}
	EGLint ctxAttr[] = {
		EGL_CONTEXT_MAJOR_VERSION, 4,
		EGL_CONTEXT_MINOR_VERSION, 3,
		EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
		EGL_NONE};
	EGLContext ctx = eglCreateContext(main->dpy, main->cfg, main->ctx, ctxAttr);
	if (ctx == EGL_NO_CONTEXT) {
		snprintf(msg, n, "eglCreateContext(shared): %s", swEGLErr(eglGetError()));
		return 1;
	}
	if (!eglMakeCurrent(main->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, ctx)) {
		snprintf(msg, n, "eglMakeCurrent(shared): %s", swEGLErr(eglGetError()));
		eglDestroyContext(main->dpy, ctx);
		return 1;
	}
	out->dpy = main->dpy;
	out->ctx = ctx;
	out->cfg = main->cfg;
	out->shared = 1;
	return 0;
}

static int swHasExt(const char *list, const char *ext) {
	if (list == NULL) return 0;
	size_t n = strlen(ext);
	const char *p = list;
	while ((p = strstr(p, ext)) != NULL) {
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) return 1;
		p += n;
	}
	return 0;
}

// swContextDevice tries the EGL devices (EGL_EXT_platform_device): hardware
// ones first, then software ones. It returns 0 or writes why all failed.
static int swContextDevice(swEGL *out, char *msg, int n) {
	const char *cext = eglQueryString(EGL_NO_DISPLAY, EGL_EXTENSIONS);
	if (!swHasExt(cext, "EGL_EXT_platform_device") && !swHasExt(cext, "EGL_EXT_device_enumeration")) {
		snprintf(msg, n, "EGL lacks EGL_EXT_platform_device/EGL_EXT_device_enumeration");
		return 1;
	}
	PFNEGLQUERYDEVICESEXTPROC queryDevices = (PFNEGLQUERYDEVICESEXTPROC)eglGetProcAddress("eglQueryDevicesEXT");
	PFNEGLQUERYDEVICESTRINGEXTPROC queryString = (PFNEGLQUERYDEVICESTRINGEXTPROC)eglGetProcAddress("eglQueryDeviceStringEXT");
	PFNEGLGETPLATFORMDISPLAYEXTPROC platformDisplay = (PFNEGLGETPLATFORMDISPLAYEXTPROC)eglGetProcAddress("eglGetPlatformDisplayEXT");
	if (!queryDevices || !queryString || !platformDisplay) {
		snprintf(msg, n, "eglQueryDevicesEXT/eglGetPlatformDisplayEXT not found");
		return 1;
	}
	EGLDeviceEXT devs[16];
	EGLint ndev = 0;
	if (!queryDevices(16, devs, &ndev) || ndev < 1) {
		snprintf(msg, n, "eglQueryDevicesEXT found no device");
		return 1;
	}
	msg[0] = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (EGLint i = 0; i < ndev; i++) {
			const char *ext = queryString(devs[i], EGL_EXTENSIONS);
			int software = swHasExt(ext, "EGL_MESA_device_software");
			if (software != pass) continue;
			char why[256];
			EGLDisplay dpy = platformDisplay(EGL_PLATFORM_DEVICE_EXT, devs[i], NULL);
			if (swContextOn(dpy, out, why, sizeof why) == 0) return 0;
			size_t used = strlen(msg);
			snprintf(msg + used, n - used, "%sdevice %d (%s): %s", used ? "; " : "", (int)i,
				software ? "software" : "hardware", why);
		}
	}
	return 1;
}

// swContextSurfaceless tries Mesa's surfaceless platform.
static int swContextSurfaceless(swEGL *out, char *msg, int n) {
	const char *cext = eglQueryString(EGL_NO_DISPLAY, EGL_EXTENSIONS);
	if (!swHasExt(cext, "EGL_MESA_platform_surfaceless")) {
		snprintf(msg, n, "EGL lacks EGL_MESA_platform_surfaceless");
		return 1;
	}
	PFNEGLGETPLATFORMDISPLAYEXTPROC platformDisplay = (PFNEGLGETPLATFORMDISPLAYEXTPROC)eglGetProcAddress("eglGetPlatformDisplayEXT");
	if (!platformDisplay) {
		snprintf(msg, n, "eglGetPlatformDisplayEXT not found");
		return 1;
	}
	return swContextOn(platformDisplay(EGL_PLATFORM_SURFACELESS_MESA, EGL_DEFAULT_DISPLAY, NULL), out, msg, n);
}

static void swEGLClose(swEGL *e) {
	eglMakeCurrent(e->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
	eglDestroyContext(e->dpy, e->ctx);
	if (!e->shared) {
		eglTerminate(e->dpy);
	}
}

static void *swEGLProc(const char *name) {
	return (void *)eglGetProcAddress(name);
}
*/
import "C"

import (
	"errors"
	"unsafe"
)

// eglContext is a current EGL context with no surface.
type eglContext struct {
	c C.swEGL
}

// newEGL makes a 4.3 core context current on the calling thread, through
// an EGL device when surfaceless is false, through Mesa's surfaceless
// platform when it is true.
func newEGL(surfaceless bool) (*eglContext, error) {
	var msg [1024]C.char
	e := &eglContext{}
	var rc C.int
	if surfaceless {
		rc = C.swContextSurfaceless(&e.c, &msg[0], C.int(len(msg)))
	} else {
		rc = C.swContextDevice(&e.c, &msg[0], C.int(len(msg)))
	}
	if rc != 0 {
		return nil, errors.New(C.GoString(&msg[0]))
	}
	return e, nil
}

func (e *eglContext) procAddr(name string) unsafe.Pointer {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return C.swEGLProc(cs)
}

func (e *eglContext) close() { C.swEGLClose(&e.c) }

// share makes a context that shares e's objects current on the calling
// (locked) thread. It must be closed before e.
func (e *eglContext) share() (glContext, error) {
	var msg [512]C.char
	s := &eglContext{}
	if C.swEGLShared(&e.c, &s.c, &msg[0], C.int(len(msg))) != 0 {
		return nil, errors.New(C.GoString(&msg[0]))
	}
	return s, nil
}
