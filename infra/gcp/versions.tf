# Pinned so that a plan made today means the same thing next month. Terraform >= 1.11 is
# needed for write-only arguments (secret_data_wo): the secret values never enter the state.
# google stays on 7.x: 8.0 changes secret_data_wo_version from a number to a string. hashicorp/time
# provides the IAM propagation wait (time_sleep) of the provider's own Cloud Functions example.
terraform {
  required_version = ">= 1.11"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.0"
    }
    time = {
      source  = "hashicorp/time"
      version = "~> 0.13"
    }
  }
}

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = merge(var.labels, { app = var.name_prefix })
}
