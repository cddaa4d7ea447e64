#ifndef DANG_CMOSQUITTO_SHIM_H
#define DANG_CMOSQUITTO_SHIM_H
#include <mosquitto.h>
#include <mqtt_protocol.h>
#endif
