/* nano_version.h - version defines and the export macro of libnano. */
#ifndef NANO_VERSION_H
#define NANO_VERSION_H

#define NANO_VERSION_MAJOR 0
#define NANO_VERSION_MINOR 1
#define NANO_VERSION_PATCH 0
#define NANO_VERSION_STRING "0.1.0"

#if defined(NANO_BUILDING_LIB) && defined(__GNUC__)
#define NANO_API __attribute__((visibility("default")))
#else
#define NANO_API
#endif

const char *nano_version(void);

#endif
